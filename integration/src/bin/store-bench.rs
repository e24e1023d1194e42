//! The central store at scale (issue 16), against a real etcd on loopback (TLS, roles):
//!
//! - fan-out: `--watchers` simulated nodes (one etcd connection each, in this process), each
//!   following the version record as a node does (watch, then read the configuration at the
//!   record's revision); per round one `apply`, and the time from `apply` returning to each
//!   watcher holding the new version: p50, p99, max;
//! - size: a registry of `--workloads` workloads and a policy of `--rules` rules: how long
//!   `apply` takes (in chunks), how long reading and validating it takes, and the memory the
//!   validated registry and policy hold (RSS growth of this process, glibc's allocator);
//! - fan-out at that size: the watchers again, each reading what a one-rule change changed
//!   from the history (as nodes catch up) instead of the whole configuration; and one node's
//!   catch-up (history read, patch, hash check) against a full read.
//!
//! Run as root (Debian's etcd-server): `target/release/store-bench [--watchers 1000]
//! [--rounds 5] [--workloads 100000] [--rules 10000]`.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use eastwall_integration::{rss, with_filler_rules};
use eastwall_lab::etcd::Etcd;
use eastwall_store::etcd_client::WatchOptions;
use eastwall_store::snapshot::{self, Part};
use eastwall_store::{Store, StoreSpec};

const PREFIX: &str = "/eastwall/";

const POLICY: &str = "apiVersion: eastwall.dev/v1
kind: Policy
spec:
  sections:
    - name: apps
      rules:
        - {id: web-to-db, action: allow, from: {app: web}, to: {app: db}, ports: [5432]}
";

struct Args {
    watchers: usize,
    rounds: usize,
    workloads: usize,
    rules: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        watchers: 1000,
        rounds: 5,
        workloads: 100_000,
        rules: 10_000,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i + 1 < v.len() {
        let n: usize = v[i + 1]
            .parse()
            .with_context(|| format!("{} {}", v[i], v[i + 1]))?;
        match v[i].as_str() {
            "--watchers" => a.watchers = n,
            "--rounds" => a.rounds = n,
            "--workloads" => a.workloads = n,
            "--rules" => a.rules = n,
            other => anyhow::bail!("unknown option {other}"),
        }
        i += 2;
    }
    Ok(a)
}

/// A registry of `n` workloads over 100 nodes (plus web and db).
fn registry(n: usize) -> String {
    let mut s = String::from(
        "apiVersion: eastwall.dev/v1\nkind: Registry\nspec:\n  trustDomain: corp.example\n  nodes:\n",
    );
    for h in 0..100 {
        s.push_str(&format!(
            "    - {{name: host{h}, addresses: [10.250.0.{}]}}\n",
            h + 1
        ));
    }
    s.push_str("  workloads:\n    - {name: web, node: host0, addresses: [10.0.0.2], app: web, zone: prod}\n    - {name: db, node: host1, addresses: [10.0.0.3], app: db, zone: prod}\n");
    for i in 0..n {
        s.push_str(&format!(
            "    - {{name: w{i}, node: host{}, addresses: [10.{}.{}.{}], app: app{}, zone: prod}}\n",
            i % 100,
            1 + i / 65_536,
            (i / 256) % 256,
            i % 256,
            i % 1000
        ));
    }
    s
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn main() -> anyhow::Result<()> {
    let a = args()?;
    let lo: IpAddr = "127.0.0.1".parse()?;
    let e = Etcd::start(&[(None, lo)], PREFIX)?;
    let admin = e.admin();
    let node = e.add_node("host0")?;
    let spec = |c: &eastwall_lab::etcd::ClientCert| StoreSpec {
        endpoints: e.endpoints(),
        ca_file: e.ca_file(),
        cert_file: c.cert.clone(),
        key_file: c.key.clone(),
        prefix: PREFIX.to_owned(),
    };
    let (admin_spec, node_spec) = (spec(&admin), spec(&node));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut s = Store::connect(&admin_spec).await?;
        let base = s.current().await?;
        let first = base
            .snapshot
            .with(&snapshot::registry_part("r.yaml", &registry(0)).unwrap())
            .with(&Part::Policy(POLICY.to_owned()));
        s.apply(&base, &first, "bench", "fan-out base").await?;

        // Fan-out.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
        let connect_started = Instant::now();
        let mut ready = Vec::new();
        let mut watchers = Vec::new();
        for _ in 0..a.watchers {
            let (tx, spec) = (tx.clone(), node_spec.clone());
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
            ready.push(ready_rx);
            watchers.push(tokio::spawn(async move {
                let mut w = Store::connect(&spec).await.unwrap();
                let current = w.current().await.unwrap();
                let key = w.keys().version();
                let mut events = w
                    .client()
                    .watch(key, Some(WatchOptions::new().with_start_revision(current.revision + 1)))
                    .await
                    .unwrap();
                let _ = ready_tx.send(());
                while let Ok(Some(resp)) = events.message().await {
                    let Some(kv) = resp.events().iter().filter_map(|e| e.kv()).next_back() else {
                        continue;
                    };
                    let rev = kv.mod_revision();
                    let v: eastwall_store::Version = serde_json::from_slice(kv.value()).unwrap();
                    // As a node does: the configuration at the record's revision.
                    let _snapshot = w.snapshot_at(rev).await.unwrap();
                    let _ = tx.send((v.version, Instant::now()));
                }
            }));
        }
        for r in ready {
            r.await?;
        }
        println!(
            "{} watchers connected and watching in {:.2} s",
            a.watchers,
            connect_started.elapsed().as_secs_f64()
        );
        let mut all = Vec::new();
        for round in 0..a.rounds {
            let base = s.current().await?;
            let next = base.snapshot.with(&Part::Policy(
                POLICY.replace("[5432]", &format!("[{}]", 6000 + round)),
            ));
            let t0 = Instant::now();
            let v = s.apply(&base, &next, "bench", "fan-out").await?.unwrap();
            let returned = Instant::now();
            let mut lat = Vec::new();
            while lat.len() < a.watchers {
                let (got, at) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                    .await
                    .context("watchers did not all see the version within 30 s")?
                    .unwrap();
                if got == v.version {
                    lat.push(at.saturating_duration_since(returned).as_secs_f64() * 1e3);
                }
            }
            println!(
                "round {round}: apply {:.1} ms; to the last of {} watchers after apply returned: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                (returned - t0).as_secs_f64() * 1e3,
                a.watchers,
                pct(&mut lat, 0.5),
                pct(&mut lat, 0.99),
                pct(&mut lat, 1.0)
            );
            all.extend(lat);
        }
        println!(
            "fan-out over {} rounds: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            a.rounds,
            pct(&mut all, 0.5),
            pct(&mut all, 0.99),
            pct(&mut all, 1.0)
        );

        // Size (the watchers would each read the whole of it: they stop first).
        for w in watchers {
            w.abort();
        }
        let reg = registry(a.workloads);
        let pol = with_filler_rules(POLICY, a.rules, 0);
        let base = s.current().await?;
        let big = base
            .snapshot
            .with(&snapshot::registry_part("r.yaml", &reg).unwrap())
            .with(&Part::Policy(pol));
        let t = Instant::now();
        s.apply(&base, &big, "bench", "size").await?;
        println!(
            "apply of {} workloads and {} rules: {:.1} s",
            a.workloads + 2,
            a.rules + 1,
            t.elapsed().as_secs_f64()
        );
        let t = Instant::now();
        let now = s.current().await?;
        let read = t.elapsed();
        let before = rss(std::process::id())?;
        let t = Instant::now();
        let valid = now.snapshot.validate(&s.keys().source()).unwrap();
        let validated = t.elapsed();
        drop(now);
        // What a node keeps in force: the registry and the policy (the texts and warnings
        // of validation go once the state files are written).
        let kept = {
            let v = valid;
            Arc::new((v.registry, v.policy))
        };
        let after = rss(std::process::id())?;
        println!(
            "a node's read of it: {:.2} s; validation: {:.2} s; the registry and policy in force hold {:.1} MiB ({} workloads, {} rules)",
            read.as_secs_f64(),
            validated.as_secs_f64(),
            after.saturating_sub(before) as f64 / (1 << 20) as f64,
            kept.0.workloads().len(),
            kept.1.rule_count()
        );
        drop(kept);

        // Fan-out at that size, catching up from the history.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
        let mut ready = Vec::new();
        let mut watchers = Vec::new();
        for _ in 0..a.watchers {
            let (tx, spec) = (tx.clone(), node_spec.clone());
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
            ready.push(ready_rx);
            watchers.push(tokio::spawn(async move {
                let mut w = Store::connect(&spec).await.unwrap();
                let (_, revision, _) = w.version().await.unwrap();
                let key = w.keys().version();
                let mut events = w
                    .client()
                    .watch(key, Some(WatchOptions::new().with_start_revision(revision + 1)))
                    .await
                    .unwrap();
                let _ = ready_tx.send(());
                while let Ok(Some(resp)) = events.message().await {
                    let Some(kv) = resp.events().iter().filter_map(|e| e.kv()).next_back() else {
                        continue;
                    };
                    let v: eastwall_store::Version = serde_json::from_slice(kv.value()).unwrap();
                    let _changes = w.recorded_changes(v.version).await.unwrap();
                    let _ = tx.send((v.version, Instant::now()));
                }
            }));
        }
        for r in ready {
            r.await?;
        }
        let base = s.current().await?;
        let have = base.version.clone().unwrap();
        // A workload moved (what automation does most), then one rule changed in the
        // 10,000-rule policy (the whole ~1 MB policy value changes).
        let moved = {
            let key = format!("{}w7", snapshot::WORKLOADS);
            let mut next = base.snapshot.clone();
            let v = next.get(&key).context("workload w7")?.replace("\"host7\"", "\"host8\"");
            next.set(key, v);
            next
        };
        let policy = moved.with(&Part::Policy(with_filler_rules(
            &POLICY.replace("[5432]", "[6999]"),
            a.rules,
            0,
        )));
        let mut from = s.current().await?;
        for (what, next, n) in [("a workload moved", moved, 1), ("one rule changed", policy, 2)] {
            s.apply(&from, &next, "bench", what).await?.unwrap();
            let returned = Instant::now();
            let mut lat = Vec::new();
            while lat.len() < a.watchers {
                let (got, at) = tokio::time::timeout(Duration::from_secs(60), rx.recv())
                    .await
                    .context("watchers did not all see the version within 60 s")?
                    .unwrap();
                if got == have.version + n {
                    lat.push(at.saturating_duration_since(returned).as_secs_f64() * 1e3);
                }
            }
            println!(
                "fan-out at {} workloads, catching up from the history ({what}): to the last of {} watchers after apply returned: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                a.workloads + 2,
                a.watchers,
                pct(&mut lat, 0.5),
                pct(&mut lat, 0.99),
                pct(&mut lat, 1.0)
            );
            from = s.current().await?;
        }
        for w in watchers {
            w.abort();
        }
        let mut n = Store::connect(&node_spec).await?;
        let (latest_version, _, _) = n.version().await?;
        let latest_version = latest_version.unwrap();
        let t = Instant::now();
        let caught = eastwall_store::follow::catch_up(&mut n, &base.snapshot, have.version, &latest_version).await?;
        let catch_up = t.elapsed();
        let t = Instant::now();
        let full = n.current().await?;
        let full_read = t.elapsed();
        assert_eq!(caught.hash(), full.snapshot.hash());
        println!(
            "one node's catch-up from the history (read, patch, hash check): {:.3} s; a full read: {:.3} s ({:.1}x)",
            catch_up.as_secs_f64(),
            full_read.as_secs_f64(),
            full_read.as_secs_f64() / catch_up.as_secs_f64()
        );
        anyhow::Ok(())
    })
}
