//! From flows to policy at scale (issue 17), in one process on loopback:
//!
//! - `--records N` synthetic EVE records of a private cloud (`--workloads` workloads in 50
//!   apps and 4 zones, TCP and UDP, HTTP requests with ids in their paths, DNS queries,
//!   allowed and denied): how long reading them back as observations, `policy recommend` and
//!   `policy replay` (of the recommendation, against the same records) take, and the memory
//!   the observations hold;
//! - `policy recommend --collector` from the collector's per-day aggregates: the same records
//!   stored in the collector's store (SQLite, in process), then how long reading the
//!   aggregates and recommending from them take, and what replaying that recommendation over
//!   the records finds;
//! - the collector's ingest: `eastwall collector`'s service (SQLite in a temporary folder)
//!   and `--senders` concurrent nodes POSTing batches of 2,000 records over mutual TLS:
//!   records per second, end to end (TLS, checks, storage with per-edge aggregates).
//!
//! `target/release/flows-bench [--records 1000000] [--workloads 1000] [--ingest 400000]
//! [--senders 4]`; no root needed.
#![allow(clippy::unwrap_used)]

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use eastwall_flows::Observations;
use eastwall_flows::recommend::{Options, recommend};
use eastwall_flows::replay::replay;
use eastwall_identity::SpiffeId;
use eastwall_node::collector::db::FlowStore as _;
use eastwall_policy::{Policy, Registry};

struct Args {
    records: usize,
    workloads: usize,
    ingest: usize,
    senders: usize,
}

fn args() -> Args {
    let mut a = Args {
        records: 1_000_000,
        workloads: 1_000,
        ingest: 400_000,
        senders: 4,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    for p in v.chunks(2) {
        let n: usize = p.get(1).and_then(|x| x.parse().ok()).unwrap_or(0);
        match p[0].as_str() {
            "--records" => a.records = n,
            "--workloads" => a.workloads = n,
            "--ingest" => a.ingest = n,
            "--senders" => a.senders = n,
            other => panic!("unknown option {other}"),
        }
    }
    a
}

fn addr(i: usize) -> String {
    let j = i + 1;
    format!("10.{}.{}.{}", 100 + j / 65_536, (j / 256) % 256, j % 256)
}

fn registry(n: usize) -> String {
    let mut s = String::from(
        "apiVersion: eastwall.dev/v1\nkind: Registry\nspec:\n  trustDomain: corp.example\n  nodes:\n",
    );
    for h in 0..20 {
        writeln!(
            s,
            "    - {{name: host{h}, addresses: [10.250.0.{}]}}",
            h + 1
        )
        .unwrap();
    }
    s.push_str("  workloads:\n");
    for i in 0..n {
        writeln!(
            s,
            "    - {{name: w{i}, node: host{}, addresses: [{}], app: app{}, zone: z{}}}",
            i % 20,
            addr(i),
            i % 50,
            i % 4
        )
        .unwrap();
    }
    s
}

/// Record `k`: workload `k % n` to a workload of the next app, one of a few shapes.
fn record(k: usize, n: usize, node: &str) -> String {
    let src = k % n;
    let dst = (src + 1) % n;
    let ts = format!(
        "2026-12-01T{:02}:{:02}:{:02}.000000+0000",
        (k / 3600) % 24,
        (k / 60) % 60,
        k % 60
    );
    let ends = format!(
        r#""src":{{"workload":"w{src}","app":"app{}","zone":"z{}"}},"dest":{{"workload":"w{dst}","app":"app{}","zone":"z{}"}}"#,
        src % 50,
        src % 4,
        dst % 50,
        dst % 4
    );
    let (verdict, rule) = if k.is_multiple_of(10) {
        ("deny", "default-deny")
    } else {
        ("allow", "observe-all")
    };
    match k % 4 {
        0 | 1 => format!(
            r#"{{"timestamp":"{ts}","flow_id":{k},"event_type":"flow","src_ip":"{}","src_port":{},"dest_ip":"{}","dest_port":{},"proto":"TCP","flow":{{"bytes_toserver":1200,"bytes_toclient":5400,"start":"{ts}","end":"{ts}","age":0,"state":"closed","reason":"closed","alerted":false}},"eastwall":{{"node":"{node}","direction":"inbound",{ends},"policy":{{"verdict":"{verdict}","rule":"{rule}","mode":"enforce","monitor":[]}},"duration_ms":3}}}}"#,
            addr(src),
            20_000 + k % 40_000,
            addr(dst),
            5432 + (k % 3) as u16
        ),
        2 => format!(
            r#"{{"timestamp":"{ts}","flow_id":{k},"event_type":"http","src_ip":"{}","src_port":{},"dest_ip":"{}","dest_port":8080,"proto":"TCP","app_proto":"http","http":{{"hostname":"api","url":"/api/accounts/{}?x=1","http_method":"{}","protocol":"HTTP/1.1","status":200}},"eastwall":{{"node":"{node}","direction":"inbound",{ends},"policy":{{"verdict":"{verdict}","rule":"{rule}","mode":"enforce","monitor":[]}}}}}}"#,
            addr(src),
            20_000 + k % 40_000,
            addr(dst),
            k % 1000,
            if k % 8 == 2 { "GET" } else { "POST" }
        ),
        _ => format!(
            r#"{{"timestamp":"{ts}","flow_id":{k},"event_type":"dns","src_ip":"{}","src_port":{},"dest_ip":"{}","dest_port":53,"proto":"UDP","dns":{{"version":3,"type":"request","tx_id":0,"id":1,"flags":"0100","rd":true,"opcode":0,"rcode":"NOERROR","queries":[{{"rrname":"h{}.corp.example","rrtype":"A"}}],"answers":[]}},"eastwall":{{"node":"{node}","direction":"inbound",{ends},"policy":{{"verdict":"{verdict}","rule":"{rule}","mode":"enforce","monitor":[]}}}}}}"#,
            addr(src),
            20_000 + k % 40_000,
            addr(dst),
            k % 7
        ),
    }
}

fn rss_mib() -> f64 {
    eastwall_integration::rss(std::process::id()).unwrap_or(0) as f64 / (1 << 20) as f64
}

// The allocator of the `eastwall` binary, whose `policy recommend` and `replay` this measures.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let a = args();
    let reg_text = registry(a.workloads);
    let reg = Registry::parse("registry.yaml", &reg_text).unwrap();

    // Recommend and replay.
    let t = Instant::now();
    let mut text = String::with_capacity(a.records * 600);
    for k in 0..a.records {
        text.push_str(&record(k, a.workloads, "host1"));
        text.push('\n');
    }
    println!(
        "{} records generated ({:.0} MiB) in {:.1} s",
        a.records,
        text.len() as f64 / (1 << 20) as f64,
        t.elapsed().as_secs_f64()
    );
    let before = rss_mib();
    let t = Instant::now();
    let mut obs = Observations::default();
    obs.read("eve.json", &text);
    let read = t.elapsed();
    drop(text);
    println!(
        "read back: {} observations in {:.1} s ({:.0} records/s); they hold {:.0} MiB",
        obs.list.len(),
        read.as_secs_f64(),
        a.records as f64 / read.as_secs_f64(),
        rss_mib() - before
    );
    let t = Instant::now();
    let rec = recommend(&obs.list, &reg, &Options::default());
    println!(
        "recommend: {} rules covering {} decisions in {:.1} s",
        rec.rules,
        rec.covered,
        t.elapsed().as_secs_f64()
    );
    let (policy, _) = Policy::parse("recommended.yaml", &rec.yaml, &reg).unwrap();
    let t = Instant::now();
    let report = replay(&obs.list, &reg, &policy);
    println!(
        "replay: {} decisions in {:.1} s ({:.0}/s): {} unchanged, {} newly denied",
        report.decisions,
        t.elapsed().as_secs_f64(),
        report.decisions as f64 / t.elapsed().as_secs_f64(),
        report.unchanged,
        report.breaks()
    );

    // From the collector's aggregates: the records stored, then the recommendation read from
    // the aggregates alone.
    let dir = tempfile::tempdir()?;
    let mut store = eastwall_node::collector::db::Sqlite::open(&dir.path().join("flows.db"))?;
    let t = Instant::now();
    for start in (0..a.records).step_by(10_000) {
        let batch: Vec<(eastwall_flows::record::Row, String)> = (start
            ..(start + 10_000).min(a.records))
            .map(|k| {
                let line = record(k, a.workloads, "host1");
                let row =
                    eastwall_flows::record::row_of(&serde_json::from_str(&line).unwrap()).unwrap();
                (row, line)
            })
            .collect();
        store.insert(&batch, 0)?;
    }
    println!(
        "stored in the collector's store (in process, no TLS): {} records in {:.1} s",
        a.records,
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let edges = store.edges(0, i64::MAX)?;
    let read = t.elapsed();
    let (from_edges, problems) = eastwall_flows::edge::observations(&edges, &reg);
    assert!(problems.is_empty(), "{problems:?}");
    let rec = recommend(&from_edges, &reg, &Options::default());
    println!(
        "recommend from the aggregates: {} edges read in {:.2} s; {} rules covering {} decisions; {:.2} s in all",
        edges.len(),
        read.as_secs_f64(),
        rec.rules,
        rec.covered,
        t.elapsed().as_secs_f64()
    );
    let (policy, _) = Policy::parse("recommended.yaml", &rec.yaml, &reg).unwrap();
    let report = replay(&obs.list, &reg, &policy);
    println!(
        "replay of the aggregates' recommendation over the records: {} unchanged, {} newly denied",
        report.unchanged,
        report.breaks()
    );
    drop((obs, store, dir));

    // The collector's ingest.
    let dir = tempfile::tempdir()?;
    let ca = eastwall_certs::Ca::generate("corp.example", Duration::from_secs(3600)).unwrap();
    let issue = |id: &str, name: &str| {
        let i = ca
            .issue(&SpiffeId::parse(id).unwrap(), Duration::from_secs(3600))
            .unwrap();
        let (c, k) = (
            dir.path().join(format!("{name}.crt")),
            dir.path().join(format!("{name}.key")),
        );
        std::fs::write(&c, &i.cert_pem).unwrap();
        std::fs::write(&k, &i.key_pem).unwrap();
        (c, k, i)
    };
    let (cert, key, _) = issue("spiffe://corp.example/collector", "collector");
    std::fs::write(dir.path().join("ca.pem"), ca.cert_pem())?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let opts = eastwall_node::collector::CollectorOptions {
        listen: format!("127.0.0.1:{port}").parse()?,
        cert,
        key,
        trust_bundle: dir.path().join("ca.pem"),
        db: dir.path().join("flows.db"),
        retention: Duration::from_secs(30 * 86_400),
        max_bytes: u64::MAX,
        edge_days: 400,
        anomalies: None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let per = a.ingest / a.senders.max(1);
    let bundle = eastwall_certs::TrustBundle::from_pem(ca.cert_pem()).unwrap();
    let nodes: Vec<_> = (0..a.senders)
        .map(|s| {
            issue(
                &format!("spiffe://corp.example/node/host{s}"),
                &format!("host{s}"),
            )
            .2
        })
        .collect();
    rt.block_on(async move {
        let serving = eastwall_node::collector::serve(&opts).await?;
        tokio::spawn(serving);
        let endpoint = eastwall_node::mtls::Endpoint::parse(&format!("https://127.0.0.1:{port}"))?;
        let server = eastwall_node::collector::collector_id("corp.example")?;
        // Batches ready before the clock starts: the senders only send.
        let batches: Vec<Vec<bytes::Bytes>> = (0..a.senders)
            .map(|s| {
                (0..per)
                    .collect::<Vec<_>>()
                    .chunks(eastwall_node::collector::export::BATCH_RECORDS)
                    .map(|ks| {
                        let lines: Vec<String> = ks
                            .iter()
                            .map(|k| record(*k, a.workloads, &format!("host{s}")))
                            .collect();
                        bytes::Bytes::from(lines.join("\n"))
                    })
                    .collect()
            })
            .collect();
        let t = Instant::now();
        let mut tasks = Vec::new();
        for (s, (node, batches)) in nodes.into_iter().zip(batches).enumerate() {
            let (endpoint, server, bundle) = (endpoint.clone(), server.clone(), bundle.clone());
            let me = eastwall_certs::Identity::from_pem(&node.cert_pem, &node.key_pem).unwrap();
            tasks.push(tokio::spawn(async move {
                let mut accepted = 0u64;
                for body in batches {
                    let call = eastwall_node::mtls::Call {
                        method: hyper::Method::POST,
                        path: eastwall_node::collector::RECORDS_PATH,
                        content_type: "application/x-ndjson",
                        body,
                        max_answer: 1 << 16,
                        timeout: Duration::from_secs(60),
                        bearer: None,
                    };
                    let ans = eastwall_node::mtls::request(&endpoint, Some(me.clone()), &bundle, &server, call, None)
                        .await
                        .unwrap();
                    assert_eq!(ans.status, 200, "sender {s}");
                    let v: serde_json::Value = serde_json::from_slice(&ans.body).unwrap();
                    accepted += v["accepted"].as_u64().unwrap();
                }
                accepted
            }));
        }
        let mut accepted = 0;
        for t in tasks {
            accepted += t.await?;
        }
        let took = t.elapsed();
        println!(
            "collector ingest: {accepted} records from {} nodes in {:.1} s: {:.0} records/s (TLS, checks, SQLite with per-edge aggregates)",
            a.senders,
            took.as_secs_f64(),
            accepted as f64 / took.as_secs_f64()
        );
        anyhow::Ok(())
    })
}
