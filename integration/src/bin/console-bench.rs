//! The console at the scale of a private cloud (issue 18): a registry of `--workloads`
//! workloads (50 apps, 4 zones) in a real etcd, a collector holding `--records` flow records
//! of the last day on `--edges` edges (each workload talking to its peers; a tenth denied, a
//! twentieth allowed but watched by a monitor rule, a few IDS alerts), the console over both,
//! and a real headless Chromium signed in:
//!
//! - time to first render of the map: from asking `/api/topology` to the map drawn (request,
//!   layout, drawing, as the page measures them), at the apps level it starts at, and at
//!   the workloads level (every workload and edge drawn): the first round (the console asks
//!   the collector) and the median of the rounds; and a re-render (a filter or search
//!   change: layout and drawing only);
//! - the console's memory (RSS) before and after.
//!
//! Run as root: `target/release/console-bench [--workloads 1000] [--edges 10000]
//! [--records 10000000] [--rounds 5]`. The records are written into the collector's SQLite
//! file before it starts (through the collector's own storage code), not sent over TLS.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use eastwall_flows::record::{End, Row};
use eastwall_lab::console::Console;
use eastwall_lab::etcd::Etcd;
use eastwall_node::collector::db::{FlowStore, Sqlite};
use fantoccini::{Client, Locator};

const ZONES: [&str; 4] = ["dev", "test", "prod", "shared"];
const APPS: usize = 50;

struct Args {
    workloads: usize,
    edges: usize,
    records: usize,
    rounds: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        workloads: 1000,
        edges: 10_000,
        records: 10_000_000,
        rounds: 5,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i + 1 < v.len() {
        let n: usize = v[i + 1]
            .parse()
            .with_context(|| format!("{} {}", v[i], v[i + 1]))?;
        match v[i].as_str() {
            "--workloads" => a.workloads = n.max(2),
            "--edges" => a.edges = n.max(1),
            "--records" => a.records = n.max(1),
            "--rounds" => a.rounds = n.max(1),
            other => anyhow::bail!("unknown argument {other}"),
        }
        i += 2;
    }
    Ok(a)
}

fn app(w: usize) -> String {
    format!("app{}", w % APPS)
}

fn zone(w: usize) -> &'static str {
    ZONES[(w / APPS) % ZONES.len()]
}

fn registry(n: usize, nodes: usize) -> String {
    let mut s = String::from(
        "apiVersion: eastwall.dev/v1\nkind: Registry\nspec:\n  trustDomain: corp.example\n  nodes:\n",
    );
    for h in 0..nodes {
        s.push_str(&format!(
            "    - {{name: node{h}, addresses: [10.250.{}.{}]}}\n",
            h / 250,
            h % 250 + 1
        ));
    }
    s.push_str("  workloads:\n");
    for w in 0..n {
        s.push_str(&format!(
            "    - {{name: wl{w}, node: node{}, addresses: [10.{}.{}.{}], app: {}, zone: {}}}\n",
            w % nodes,
            200 + w / 65_000,
            (w / 250) % 260,
            w % 250 + 1,
            app(w),
            zone(w)
        ));
    }
    s
}

const POLICY: &str = "apiVersion: eastwall.dev/v1
kind: Policy
spec:
  sections:
    - name: zones
      rules:
        - {id: watch-dev-prod, mode: monitor, action: deny, from: {zone: dev}, to: {zone: prod}}
        - {id: apps-talk, action: allow, from: {zone: prod}, to: {zone: prod}}
";

/// The `i`-th record: on edge `i % edges` (source `e % workloads`, destination one of its
/// peers), at a time spread over the last day.
fn record(i: usize, a: &Args, now_us: i64) -> (Row, String) {
    let e = i % a.edges;
    let per = a.edges.div_ceil(a.workloads).max(1);
    let s = e / per % a.workloads;
    let d = (s * 7 + 13 * (e % per) + 1) % a.workloads;
    let kind = i % 20;
    let (verdict, rule, monitor, event) = match kind {
        0 | 1 => (Some("deny"), "default-deny", None, "flow"),
        2 => (Some("allow"), "apps-talk", Some("watch-dev-prod"), "flow"),
        3 if i % 1000 == 3 => (None, "", None, "alert"),
        _ => (Some("allow"), "apps-talk", None, "flow"),
    };
    let end = |w: usize| End {
        ip: None,
        workload: Some(format!("wl{w}")),
        app: Some(app(w)),
        zone: Some(zone(w).to_owned()),
        identity: Some(format!("spiffe://corp.example/wl/wl{w}")),
        user: None,
        groups: Vec::new(),
    };
    let time_us = now_us - (86_400_000_000i64 * (a.records - i) as i64 / a.records as i64);
    let row = Row {
        time_us,
        node: format!("node{}", s % 20),
        event_type: event.to_owned(),
        src: end(s),
        dest: end(d),
        proto: "TCP".to_owned(),
        port: [443, 5432, 8080][e % 3],
        verdict: verdict.map(str::to_owned),
        rule: (!rule.is_empty()).then(|| rule.to_owned()),
        monitor: monitor.map(str::to_owned),
        method: None,
        path: None,
        dns: None,
        sid: (event == "alert").then_some(2_100_001),
        bytes: 1_000 + (i % 5_000) as u64,
        count: 1,
        relayed: false,
        icmp_type: None,
        per_request: false,
    };
    // The text stored beside the columns: what a node writes, in size and shape.
    let raw = format!(
        r#"{{"timestamp":"{}","event_type":"{event}","src_ip":"10.200.0.{}","src_port":{},"dest_ip":"10.200.1.{}","dest_port":{},"proto":"TCP","flow":{{"bytes_toserver":{},"bytes_toclient":0,"state":"closed"}},"eastwall":{{"node":"node{}","src":{{"workload":"wl{s}","app":"{}","zone":"{}"}},"dest":{{"workload":"wl{d}","app":"{}","zone":"{}"}},"policy":{{"verdict":"{}","rule":"{rule}"}}}}}}"#,
        eastwall_flows::record::timestamp_of(time_us),
        s % 250,
        30_000 + i % 30_000,
        d % 250,
        row.port,
        row.bytes,
        s % 20,
        app(s),
        zone(s),
        app(d),
        zone(d),
        verdict.unwrap_or("")
    );
    (row, raw)
}

fn fill(db: &std::path::Path, a: &Args) -> anyhow::Result<()> {
    let now_us = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)?
        .as_micros() as i64;
    let mut store = Sqlite::open(db)?;
    let started = Instant::now();
    let batch = 10_000;
    let mut i = 0;
    while i < a.records {
        let n = batch.min(a.records - i);
        let recs: Vec<(Row, String)> = (i..i + n).map(|j| record(j, a, now_us)).collect();
        store.insert(&recs, now_us)?;
        i += n;
        if i % 1_000_000 == 0 {
            eprintln!(
                "  {i} records stored ({:.0} s)",
                started.elapsed().as_secs_f64()
            );
        }
    }
    println!(
        "collector database: {} records on {} edges stored in {:.1} s ({:.0} MiB)",
        a.records,
        a.edges,
        started.elapsed().as_secs_f64(),
        std::fs::metadata(db)?.len() as f64 / (1u64 << 20) as f64
    );
    Ok(())
}

/// What one level of the map measured (ms).
struct Level {
    what: String,
    cold_total: f64,
    cold_fetch: f64,
    total: f64,
    fetch: f64,
    layout: f64,
    draw: f64,
    again: f64,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

async fn render(c: &Client, level: &str) -> anyhow::Result<serde_json::Value> {
    // Ask the map again at this level and wait for the page's own measurement.
    c.execute(
        "window.eastwallMap.lastRender = null;
         const l = document.getElementById('map-level'); l.value = arguments[0];
         window.eastwallMap.expanded.clear(); loadMap();",
        vec![serde_json::json!(level)],
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = c
            .execute(
                "const r = window.eastwallMap.lastRender; return r && r.totalMs !== undefined ? r : null;",
                vec![],
            )
            .await?;
        if r.is_object() {
            return Ok(r);
        }
        anyhow::ensure!(Instant::now() < deadline, "the map never rendered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn main() -> anyhow::Result<()> {
    let a = args()?;
    eastwall_integration::require_root();
    anyhow::ensure!(
        eastwall_lab::browser::installed(),
        "Chromium and ChromeDriver are needed (scripts/setup-debian.sh)"
    );
    let exe = eastwall_integration::eastwall_bin();
    let mut lab = eastwall_lab::Lab::new()?;
    lab.enable_identity("corp.example")?;
    let host = lab.add_host("central")?;
    let etcd = Etcd::start(
        &[(Some(host.netns.as_str()), host.addr.into())],
        "/eastwall/",
    )?;
    let files = tempfile::tempdir()?;
    std::fs::write(
        files.path().join("registry.yaml"),
        registry(a.workloads, 20),
    )?;
    std::fs::write(files.path().join("policy.yaml"), POLICY)?;
    let admin = etcd.admin();
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &host.netns])
        .arg(&exe)
        .args(["apply", "-f"])
        .arg(files.path())
        .args(["-m", "the bench's cloud"])
        .env("EASTWALL_ETCD_ENDPOINTS", etcd.endpoints().join(","))
        .env("EASTWALL_ETCD_CACERT", etcd.ca_file())
        .env("EASTWALL_ETCD_CERT", &admin.cert)
        .env("EASTWALL_ETCD_KEY", &admin.key)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let db = files.path().join("flows.db");
    fill(&db, &a)?;
    let mut console = Console::start_with_db(&lab, "central", &exe, Some(db))?;
    console.start_console(&etcd)?;
    let pid = console.console_pid().context("the console's PID")?;
    let rss0 = eastwall_integration::rss(pid)?;
    let browser = eastwall_lab::browser::Browser::start(console.netns(), console.spki())?;
    let (url, user) = (console.url(), console.users()[0].clone());
    let rounds = a.rounds;
    let netns = browser.netns().to_owned();
    let browser = std::sync::Arc::new(browser);
    let b = browser.clone();
    let results = eastwall_lab::in_netns(&netns, move || -> anyhow::Result<Vec<Level>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let c = b.session(1600, 1000).await?;
            c.goto(&url).await?;
            c.wait().for_element(Locator::Css("#signin-user")).await?;
            c.find(Locator::Css("#signin-user")).await?.send_keys(&user.name).await?;
            c.find(Locator::Css("#signin-password")).await?.send_keys(&user.password).await?;
            c.find(Locator::Css("#signin-submit")).await?.click().await?;
            let mut out = Vec::new();
            for level in ["app", "workload"] {
                // The console reuses a window's aggregates for 10 s: wait that out, so that
                // the first round asks the collector.
                tokio::time::sleep(Duration::from_secs(11)).await;
                let (mut total, mut fetch, mut layout, mut draw, mut again) =
                    (vec![], vec![], vec![], vec![], vec![]);
                let mut shape = String::new();
                let mut cold = (0.0, 0.0);
                for round in 0..rounds {
                    let r = render(&c, level).await?;
                    let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
                    if round == 0 {
                        cold = (f("totalMs"), f("fetchMs"));
                    }
                    total.push(f("totalMs"));
                    fetch.push(f("fetchMs"));
                    layout.push(f("layoutMs"));
                    draw.push(f("drawMs"));
                    shape = format!("{} workloads, {} shapes, {} drawn edges", r["workloads"], r["nodes"], r["edges"]);
                    // A filter or search change: layout and drawing again, no request.
                    let t = c
                        .execute("const t = performance.now(); renderMap(); return performance.now() - t;", vec![])
                        .await?;
                    again.push(t.as_f64().unwrap_or(f64::NAN));
                }
                eprintln!("  {level} level: {shape}");
                out.push(Level {
                    what: format!("{level} level ({shape})"),
                    cold_total: cold.0,
                    cold_fetch: cold.1,
                    total: median(&mut total),
                    fetch: median(&mut fetch),
                    layout: median(&mut layout),
                    draw: median(&mut draw),
                    again: median(&mut again),
                });
            }
            let _ = c.close().await;
            Ok(out)
        })
    })??;
    let rss1 = eastwall_integration::rss(pid)?;
    println!(
        "\n| map of {} workloads, {} edges, {} stored records | first render (of which the topology request) | again, median of {} (request) | layout | drawing | re-render (a filter change) |",
        a.workloads, a.edges, a.records, a.rounds
    );
    println!("|---|---|---|---|---|---|");
    for l in results {
        println!(
            "| {} | {:.0} ms ({:.0} ms) | {:.0} ms ({:.0} ms) | {:.0} ms | {:.0} ms | {:.0} ms |",
            l.what, l.cold_total, l.cold_fetch, l.total, l.fetch, l.layout, l.draw, l.again
        );
    }
    println!(
        "\nthe console's memory: {:.1} MiB after start, {:.1} MiB after the rounds",
        rss0 as f64 / (1u64 << 20) as f64,
        rss1 as f64 / (1u64 << 20) as f64
    );
    drop(browser);
    Ok(())
}
