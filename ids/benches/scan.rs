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

mod traffic;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use eastwall_ids::{
    AppProto, Classifications, Dir, Engine, FlowInspector, FlowMeta, HttpRequest, HttpResponse,
    HttpVersion, Selection, Timestamp, Vars, parse_rules,
};
use std::sync::Arc;
use std::time::Duration;

/// What one socket read hands the node.
const READ: usize = 16 * 1024;

struct Message {
    raw: Vec<u8>,
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
        raw: raw.to_vec(),
        head_line,
        status,
        headers,
        body: raw[n..].to_vec(),
    }
}

fn web_engine() -> Option<Arc<Engine>> {
    let dir =
        std::env::var("EASTWALL_ET_OPEN").unwrap_or_else(|_| "/work/shared/ids/et-open".into());
    let mut rules = Vec::new();
    for f in [
        "emerging-web_server.rules",
        "emerging-web_specific_apps.rules",
        "emerging-web_client.rules",
    ] {
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
        "engine: {} ET Open web rules\n{}",
        report.loaded,
        engine.layout()
    );
    Some(Arc::new(engine))
}

/// Feed all exchanges; returns the number of alerts.
fn scan(engine: &Arc<Engine>, conns: &[Vec<(Message, Message)>]) -> usize {
    let now = Timestamp::from_secs(1_700_000_000);
    let mut alerts = 0;
    for (i, conn) in conns.iter().enumerate() {
        let meta = FlowMeta {
            src: format!(
                "10.1.{}.{}:{}",
                i / 250 % 250,
                i % 250 + 1,
                30000 + i % 30000
            )
            .parse()
            .unwrap(),
            dst: "10.2.0.20:80".parse().unwrap(),
        };
        let mut fi = FlowInspector::new(engine.clone(), meta);
        fi.set_app_proto(AppProto::Http1);
        for (req, resp) in conn {
            for chunk in req.raw.chunks(READ) {
                alerts += fi.stream(Dir::ToServer, chunk, now).alerts.len();
            }
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
                raw_headers: None,
            };
            alerts += fi.http_request(&r, now).alerts.len();
            if !req.body.is_empty() {
                alerts += fi.http_request_body(&req.body, true, now).alerts.len();
            }
            for chunk in resp.raw.chunks(READ) {
                alerts += fi.stream(Dir::ToClient, chunk, now).alerts.len();
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
                raw_headers: None,
            };
            alerts += fi.http_response(&r, now).alerts.len();
            let chunks: Vec<&[u8]> = resp.body.chunks(READ).collect();
            for (k, chunk) in chunks.iter().enumerate() {
                alerts += fi
                    .http_response_body(chunk, k + 1 == chunks.len(), now)
                    .alerts
                    .len();
            }
        }
        alerts += fi.close(now).alerts.len();
    }
    alerts
}

fn bench(c: &mut Criterion) {
    let Some(engine) = web_engine() else { return };
    let mut g = c.benchmark_group("scan");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    for shape in [traffic::Shape::Web, traffic::Shape::Bulk] {
        let (exchanges, per_connection) = shape.traffic();
        let bytes: usize = exchanges
            .iter()
            .map(|e| e.request.len() + e.response.len())
            .sum();
        let conns: Vec<Vec<(Message, Message)>> = exchanges
            .chunks(per_connection)
            .map(|c| {
                c.iter()
                    .map(|e| (parse(&e.request, true), parse(&e.response, false)))
                    .collect()
            })
            .collect();
        let alerts = scan(&engine, &conns);
        eprintln!(
            "traffic ({}): {} exchanges, {bytes} bytes on the wire, {alerts} alerts",
            shape.name(),
            exchanges.len()
        );
        g.throughput(Throughput::BytesDecimal(bytes as u64));
        // The first shape keeps its old name, so earlier results compare.
        let name = match shape {
            traffic::Shape::Web => "et-open-web-rules/http".to_string(),
            other => format!("et-open-web-rules/{}", other.name()),
        };
        g.bench_function(name, |b| b.iter(|| scan(&engine, &conns)));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
