//! Scan throughput of the engine on Emerging Threats Open's web rules
//! (`emerging-web_server.rules`, `emerging-web_specific_apps.rules`,
//! `emerging-web_client.rules`) over realistic HTTP/1.1 traffic (`traffic.rs`), driven the
//! way the node drives it: per keep-alive connection one `FlowInspector`; per exchange the
//! raw bytes of both directions (`stream`) and the parsed request, response and bodies.
//! HTTP parsing happens before timing; the throughput counts the bytes on the wire of both
//! directions, on one core. Needs ET Open (`EASTWALL_ET_OPEN`, default
//! `/work/shared/ids/et-open`); without it the benchmark says so and measures nothing.
//!
//! `cargo bench -p eastwall-ids --bench scan`; `scripts/ids-conformance.sh bench` runs
//! Suricata on the same traffic and rules.

#![allow(missing_docs, clippy::unwrap_used)]

#[allow(dead_code)] // shared with the corpus generator, which uses more of it
mod traffic;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use eastwall_ids::{
    AppProto, Classifications, Dir, Engine, FlowInspector, FlowMeta, HttpRequest, HttpResponse,
    HttpVersion, Selection, Timestamp, Vars, parse_rules,
};
use std::sync::Arc;
use std::time::Duration;

/// The node's allocator: the engine allocates per message and transaction.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// What one socket read hands the node.
const READ: usize = 16 * 1024;

struct Message {
    raw: Vec<u8>,
    /// The head as sent, through the empty line (the node's L7 tap gives it).
    raw_head: Vec<u8>,
    head_line: (String, Vec<u8>),
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

fn parse(raw: &[u8], request: bool) -> Message {
    let mut storage = [httparse::EMPTY_HEADER; 64];
    let (n, head_line, status, headers) = if request {
        let mut r = httparse::Request::new(&mut storage);
        let n = match r.parse(raw).unwrap() {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => panic!("partial request"),
        };
        let h = r
            .headers
            .iter()
            .map(|h| (h.name.to_string(), h.value.to_vec()))
            .collect();
        (
            n,
            (
                r.method.unwrap().to_string(),
                r.path.unwrap().as_bytes().to_vec(),
            ),
            0,
            h,
        )
    } else {
        let mut r = httparse::Response::new(&mut storage);
        let n = match r.parse(raw).unwrap() {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => panic!("partial response"),
        };
        let h = r
            .headers
            .iter()
            .map(|h| (h.name.to_string(), h.value.to_vec()))
            .collect();
        (
            n,
            (r.reason.unwrap().to_string(), Vec::new()),
            r.code.unwrap(),
            h,
        )
    };
    Message {
        raw_head: raw[..n].to_vec(),
        raw: raw.to_vec(),
        head_line,
        status,
        headers,
        body: raw[n..].to_vec(),
    }
}

/// An engine of ET Open's rule files `files` (all of them when `None`).
fn et_open_engine(files: Option<&[&str]>) -> Option<Arc<Engine>> {
    let dir =
        std::env::var("EASTWALL_ET_OPEN").unwrap_or_else(|_| "/work/shared/ids/et-open".into());
    let names: Vec<String> = match files {
        Some(files) => files.iter().map(|f| (*f).to_string()).collect(),
        None => {
            let mut all: Vec<String> = std::fs::read_dir(&dir)
                .ok()?
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.ends_with(".rules"))
                .collect();
            all.sort();
            all
        }
    };
    let mut rules = Vec::new();
    for f in &names {
        let Ok(text) = std::fs::read_to_string(format!("{dir}/{f}")) else {
            eprintln!("ET Open not found at {dir} (set EASTWALL_ET_OPEN): no scan benchmark");
            return None;
        };
        rules.extend(parse_rules(f, &text).rules);
    }
    let (engine, report) = Engine::build(
        &rules,
        &Vars::east_west(),
        &Classifications::suricata_defaults(),
        &Selection::all(),
    );
    eprintln!(
        "engine: {} ET Open rules of {} files\n{}",
        report.loaded,
        names.len(),
        engine.layout()
    );
    Some(Arc::new(engine))
}

/// A flow, made ready before timing (HTTP parsed, as hyper does in the node).
enum Prepared {
    Http(Vec<(Message, Message)>),
    Tcp(AppProto, Vec<(Dir, Vec<u8>)>),
    Udp(AppProto, Vec<(Dir, Vec<u8>)>),
}

fn prepare(flows: Vec<traffic::Flow>) -> Vec<Prepared> {
    let dir = |from_client: bool| {
        if from_client {
            Dir::ToServer
        } else {
            Dir::ToClient
        }
    };
    flows
        .into_iter()
        .map(|f| {
            let turns = || f.turns.iter().map(|(c, b)| (dir(*c), b.clone())).collect();
            match f.carries {
                traffic::Carries::Http => Prepared::Http(
                    f.turns
                        .chunks(2)
                        .map(|p| (parse(&p[0].1, true), parse(&p[1].1, false)))
                        .collect(),
                ),
                // The node names TLS when its prelude is a ClientHello; SMTP and unknown
                // protocols are left to the inspector to recognise.
                traffic::Carries::Tls => Prepared::Tcp(AppProto::Tls, turns()),
                traffic::Carries::Smtp | traffic::Carries::Opaque => {
                    Prepared::Tcp(AppProto::Unknown, turns())
                }
                traffic::Carries::DnsUdp => Prepared::Udp(AppProto::Dns, turns()),
            }
        })
        .collect()
}

/// Feed all flows; returns the number of alerts.
fn scan(engine: &Arc<Engine>, flows: &[Prepared]) -> usize {
    let now = Timestamp::from_secs(1_700_000_000);
    let mut alerts = 0;
    for (i, flow) in flows.iter().enumerate() {
        let port = match flow {
            Prepared::Http(_) => 80,
            Prepared::Tcp(AppProto::Tls, _) => 443,
            Prepared::Tcp(..) => 5432,
            Prepared::Udp(..) => 53,
        };
        let meta = FlowMeta {
            src: format!(
                "10.1.{}.{}:{}",
                i / 250 % 250,
                i % 250 + 1,
                30000 + i % 30000
            )
            .parse()
            .unwrap(),
            dst: std::net::SocketAddr::from(([10, 2, 0, 20], port)),
        };
        match flow {
            Prepared::Http(conn) => alerts += http_flow(engine, meta, conn, now),
            Prepared::Tcp(app, turns) => {
                let mut fi = FlowInspector::new(engine.clone(), meta);
                if *app != AppProto::Unknown {
                    fi.set_app_proto(*app);
                }
                for (dir, bytes) in turns {
                    for chunk in bytes.chunks(READ) {
                        alerts += fi.stream(*dir, chunk, now).alerts.len();
                    }
                }
                alerts += fi.close(now).alerts.len();
            }
            Prepared::Udp(app, turns) => {
                let mut fi = FlowInspector::new_udp(engine.clone(), meta);
                fi.set_app_proto(*app);
                for (dir, datagram) in turns {
                    alerts += fi.datagram(*dir, datagram, now).alerts.len();
                }
            }
        }
    }
    alerts
}

/// One keep-alive HTTP connection, as the node's L7 layer feeds it.
fn http_flow(
    engine: &Arc<Engine>,
    meta: FlowMeta,
    conn: &[(Message, Message)],
    now: Timestamp,
) -> usize {
    let mut alerts = 0;
    let mut fi = FlowInspector::new(engine.clone(), meta);
    fi.set_app_proto(AppProto::Http1);
    // The parsed head goes first: the inspector then leaves HTTP on the raw stream to the
    // caller (`http_request`), as Suricata parses it once and also scans the raw stream.
    for (req, resp) in conn {
        let headers: Vec<(&str, &[u8])> = req
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()))
            .collect();
        let r = HttpRequest {
            method: &req.head_line.0,
            uri_raw: &req.head_line.1,
            host: None,
            headers: &headers,
            version: HttpVersion::Http11,
            raw_head: Some(&req.raw_head),
        };
        alerts += fi.http_request(&r, now).alerts.len();
        for chunk in req.raw.chunks(READ) {
            alerts += fi.stream(Dir::ToServer, chunk, now).alerts.len();
        }
        if !req.body.is_empty() {
            alerts += fi.http_request_body(&req.body, true, now).alerts.len();
        }
        let headers: Vec<(&str, &[u8])> = resp
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()))
            .collect();
        let r = HttpResponse {
            status: resp.status,
            reason: &resp.head_line.0,
            headers: &headers,
            version: HttpVersion::Http11,
            raw_head: Some(&resp.raw_head),
        };
        alerts += fi.http_response(&r, now).alerts.len();
        for chunk in resp.raw.chunks(READ) {
            alerts += fi.stream(Dir::ToClient, chunk, now).alerts.len();
        }
        let chunks: Vec<&[u8]> = resp.body.chunks(READ).collect();
        for (k, chunk) in chunks.iter().enumerate() {
            alerts += fi
                .http_response_body(chunk, k + 1 == chunks.len(), now)
                .alerts
                .len();
        }
    }
    alerts + fi.close(now).alerts.len()
}

/// ET Open's web rule files: the web and bulk shapes are scanned with these.
const WEB_RULES: &[&str] = &[
    "emerging-web_server.rules",
    "emerging-web_specific_apps.rules",
    "emerging-web_client.rules",
];

fn bench(c: &mut Criterion) {
    let Some(web) = et_open_engine(Some(WEB_RULES)) else {
        return;
    };
    let mut g = c.benchmark_group("scan");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    for shape in [traffic::Shape::Web, traffic::Shape::Bulk] {
        run_shape(&mut g, &web, shape, "et-open-web-rules");
    }
    drop(web);
    // The mixed shape carries TLS, DNS, mail and more: all of ET Open applies.
    if let Some(all) = et_open_engine(None) {
        run_shape(&mut g, &all, traffic::Shape::Mixed, "et-open");
    }
    g.finish();
}

fn run_shape(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    engine: &Arc<Engine>,
    shape: traffic::Shape,
    rules: &str,
) {
    let flows = shape.flows();
    let bytes: usize = flows.iter().map(traffic::Flow::bytes).sum();
    let count = flows.len();
    let flows = prepare(flows);
    let alerts = scan(engine, &flows);
    eprintln!(
        "traffic ({}): {count} flows, {bytes} bytes of payload, {alerts} alerts",
        shape.name()
    );
    g.throughput(Throughput::BytesDecimal(bytes as u64));
    // The first shape keeps its old name, so earlier results compare.
    let name = match shape {
        traffic::Shape::Web => format!("{rules}/http"),
        other => format!("{rules}/{}", other.name()),
    };
    g.bench_function(name, |b| b.iter(|| scan(engine, &flows)));
}

criterion_group!(benches, bench);
criterion_main!(benches);
