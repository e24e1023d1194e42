//! `eastwall collector`: every node's flow records in one place.
//!
//! HTTPS with client certificates required ([`crate::mtls`]): the collector presents
//! `spiffe://<td>/collector` and accepts only clients whose certificate chains to the trust
//! bundle.
//!
//! - `POST /v1/records` (nodes only, `spiffe://<td>/node/<name>`): EVE records as JSON lines
//!   (at most [`MAX_BATCH`] bytes, each line at most 256 KiB). Each line is checked on its
//!   own: an eastwall record, written by that node (`eastwall.node`), not from the future
//!   (more than [`MAX_SKEW`] ahead of the collector's clock). Good lines are stored whatever
//!   the bad ones; the answer says how many were accepted and why the others were not.
//! - `GET /v1/records?...` (operators only, `spiffe://<td>/operator/<name>`): the records a
//!   filter keeps, as JSON lines, oldest first; `after=ID` follows (the answer's
//!   `x-eastwall-last-id` header is the id to give next, `x-eastwall-more: 1` when records
//!   remain past it: a query looks at [`db::MAX_SCAN`] records at most, so that the store is
//!   never held long).
//! - `GET /v1/edges?since=...` (operators): the per-edge aggregates, JSON.
//!
//! Storage: [`db::FlowStore`], by default SQLite ([`db::Sqlite`]), pruned every minute by age
//! and size. The node side is [`export`].

pub mod client;
pub mod db;
pub mod export;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use bytes::Bytes;
use eastwall_certs::{Identity, RotatingIdentity, TrustBundle};
use eastwall_flows::filter::{EndIs, Filter};
use eastwall_identity::SpiffeId;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tracing::{info, warn};

use self::db::FlowStore;
use crate::mtls::{ALPN, Peer};

/// The ingest path.
pub const RECORDS_PATH: &str = "/v1/records";
/// The aggregates' path.
pub const EDGES_PATH: &str = "/v1/edges";
/// Largest batch a node may send.
pub const MAX_BATCH: usize = 8 << 20;
/// How far ahead of the collector's clock a record may be.
pub const MAX_SKEW: Duration = Duration::from_secs(300);
/// Most records one query answers.
pub const MAX_LIMIT: usize = 10_000;
/// Problems listed in an answer at most.
const MAX_PROBLEMS: usize = 20;

/// The identity the collector presents: `spiffe://<td>/collector`.
pub fn collector_id(trust_domain: &str) -> anyhow::Result<SpiffeId> {
    SpiffeId::parse(&format!("spiffe://{trust_domain}/collector"))
        .map_err(|e| anyhow::anyhow!("invalid trust domain {trust_domain:?}: {e}"))
}

/// What `eastwall collector` was asked to do.
#[derive(Debug, Clone)]
pub struct CollectorOptions {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Its certificate (`spiffe://<td>/collector`) and key.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// The trust bundle clients chain to.
    pub trust_bundle: PathBuf,
    /// The SQLite file.
    pub db: PathBuf,
    /// Records older than this (by arrival) are dropped.
    pub retention: Duration,
    /// The store is kept under this size.
    pub max_bytes: u64,
    /// Edges older than this many days are dropped.
    pub edge_days: i64,
    /// Lateral-movement signals, when asked for (off by default: they take a learning
    /// period to be quiet).
    pub anomalies: Option<eastwall_flows::anomaly::Thresholds>,
}

/// Who a client is, as far as the collector cares.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Client {
    Node(String),
    Operator(String),
}

fn client_of(peer: &Peer) -> Result<Client, String> {
    let id = peer.identity.as_ref().map_err(Clone::clone)?;
    let path = id.path();
    if let Some(n) = path.strip_prefix("/node/").filter(|n| !n.contains('/')) {
        return Ok(Client::Node(n.to_owned()));
    }
    if let Some(n) = path.strip_prefix("/operator/").filter(|n| !n.contains('/')) {
        return Ok(Client::Operator(n.to_owned()));
    }
    Err(format!(
        "{id} is neither a node (spiffe://<td>/node/<name>) nor an operator (spiffe://<td>/operator/<name>)"
    ))
}

struct Ctx {
    store: Mutex<Box<dyn FlowStore>>,
    detector: Mutex<Option<eastwall_flows::anomaly::Detector>>,
}

/// Runs the collector until SIGINT or SIGTERM.
pub fn run(opts: CollectorOptions) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let serving = serve(&opts).await?;
        tokio::select! {
            r = serving => r,
            _ = term.recv() => { info!("stopping"); Ok(()) },
            _ = int.recv() => { info!("stopping"); Ok(()) },
        }
    })
}

/// Binds and returns the service to run.
pub async fn serve(
    opts: &CollectorOptions,
) -> anyhow::Result<impl Future<Output = anyhow::Result<()>> + use<>> {
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
    };
    let bundle = TrustBundle::from_pem(&read(&opts.trust_bundle)?)
        .map_err(|e| anyhow::anyhow!("{}: {e}", opts.trust_bundle.display()))?;
    let own = Identity::from_pem(&read(&opts.cert)?, &read(&opts.key)?)
        .map_err(|e| anyhow::anyhow!("{}: {e}", opts.cert.display()))?;
    let expected = collector_id(bundle.trust_domain())?;
    if own.id != expected {
        anyhow::bail!(
            "{} is for {}, but the collector must present {expected}",
            opts.cert.display(),
            own.id
        );
    }
    let config = eastwall_certs::server_config(RotatingIdentity::new(own), &bundle, &[ALPN])
        .map_err(|e| anyhow::anyhow!("TLS configuration: {e}"))?;
    let mut store = db::Sqlite::open(&opts.db)?;
    // What past traffic says is usual, from the aggregates kept.
    let detector = match opts.anomalies {
        None => None,
        Some(t) => {
            let mut d = eastwall_flows::anomaly::Detector::new(t);
            for e in store.edges(0, i64::MAX)? {
                if e.src.workload.is_empty() || e.dest.workload.is_empty() {
                    continue;
                }
                let first = eastwall_flows::record::unix_micros(&e.first).unwrap_or(0);
                d.learn(
                    &e.src.workload,
                    &format!("{} {}/{}", e.dest.workload, e.proto, e.port),
                    first,
                );
            }
            Some(d)
        }
    };
    let listener = TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("listening on {}", opts.listen))?;
    info!(listen = %opts.listen, db = %opts.db.display(), "collector serving {RECORDS_PATH}");
    let ctx = Arc::new(Ctx {
        store: Mutex::new(Box::new(store)),
        detector: Mutex::new(detector),
    });
    tokio::spawn(prune(ctx.clone(), opts.clone()));
    let tls = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    Ok(async move {
        crate::mtls::serve(
            listener,
            tls,
            // Each may hold a batch of up to 8 MiB while it is read: at most 1 GiB at once.
            128,
            Duration::from_secs(600),
            move |req, peer| {
                let ctx = ctx.clone();
                async move { handle(req, &ctx, &peer).await }
            },
        )
        .await
    })
}

async fn prune(ctx: Arc<Ctx>, opts: CollectorOptions) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        let now = now_us();
        let before = now - i64::try_from(opts.retention.as_micros()).unwrap_or(i64::MAX);
        let edges_before = now.div_euclid(86_400_000_000) - opts.edge_days;
        let ctx = ctx.clone();
        let max = opts.max_bytes;
        let r = tokio::task::spawn_blocking(move || {
            ctx.store
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .prune(before, max, edges_before)
        })
        .await;
        match r {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => info!(records = n, "retention: dropped the oldest records"),
            Ok(Err(e)) => warn!("retention: {e:#}"),
            Err(e) => warn!("retention: {e}"),
        }
    }
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

fn answer(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    r
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    answer(status, "text/plain; charset=utf-8", body)
}

async fn handle(req: Request<Incoming>, ctx: &Arc<Ctx>, peer: &Peer) -> Response<Full<Bytes>> {
    let client = match client_of(peer) {
        Ok(c) => c,
        Err(why) => {
            warn!(remote = %peer.addr, "refused: {why}");
            return text(StatusCode::FORBIDDEN, format!("{why}\n"));
        }
    };
    match (req.method(), req.uri().path(), &client) {
        (&Method::POST, RECORDS_PATH, Client::Node(node)) => ingest(req, ctx, node, peer).await,
        (&Method::GET, RECORDS_PATH, Client::Operator(_)) => query(req, ctx).await,
        (&Method::GET, EDGES_PATH, Client::Operator(_)) => edges(req, ctx).await,
        (_, RECORDS_PATH | EDGES_PATH, _) => text(
            StatusCode::FORBIDDEN,
            "nodes send records (POST /v1/records); operators read them (GET)\n".to_owned(),
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            format!("not found: POST or GET {RECORDS_PATH}, GET {EDGES_PATH}\n"),
        ),
    }
}

/// Checks each line of `body` as a record of `node`: the accepted ones with their columns,
/// and the problems (line number and why).
fn check_batch(
    body: &[u8],
    node: &str,
    now_us: i64,
) -> (Vec<(eastwall_flows::record::Row, String)>, Vec<String>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    let ahead = i64::try_from(MAX_SKEW.as_micros()).unwrap_or(i64::MAX);
    for (i, line) in body.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let at = i + 1;
        if line.len() > eastwall_flows::observation::MAX_LINE_BYTES {
            bad.push(format!(
                "line {at}: {} bytes, longer than a record may be",
                line.len()
            ));
            continue;
        }
        let Ok(text) = std::str::from_utf8(line) else {
            bad.push(format!("line {at}: not UTF-8"));
            continue;
        };
        let row = serde_json::from_str(text)
            .map_err(|e| format!("not JSON: {e}"))
            .and_then(|v| eastwall_flows::record::row_of(&v))
            .map(|mut r| {
                // Alerts do not name their node: the one that proved itself sent them.
                if r.node.is_empty() {
                    r.node = node.to_owned();
                }
                r
            });
        match row {
            Err(why) => bad.push(format!("line {at}: {why}")),
            Ok(r) if r.node != node => bad.push(format!(
                "line {at}: a record of node `{}` sent by node `{node}`",
                r.node
            )),
            Ok(r) if r.time_us > now_us + ahead => bad.push(format!(
                "line {at}: its timestamp is {} s ahead of the collector's clock",
                (r.time_us - now_us) / 1_000_000
            )),
            Ok(r) => good.push((r, text.to_owned())),
        }
    }
    (good, bad)
}

async fn ingest(
    req: Request<Incoming>,
    ctx: &Arc<Ctx>,
    node: &str,
    peer: &Peer,
) -> Response<Full<Bytes>> {
    let body = match Limited::new(req.into_body(), MAX_BATCH).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let too_big = e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            return if too_big {
                text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("a batch is at most {MAX_BATCH} bytes\n"),
                )
            } else {
                text(StatusCode::BAD_REQUEST, format!("reading the batch: {e}\n"))
            };
        }
    };
    let now = now_us();
    let (mut good, bad) = check_batch(&body, node, now);
    let accepted = good.len();
    if !good.is_empty() {
        let ctx = ctx.clone();
        let stored = tokio::task::spawn_blocking(move || {
            // Anomalies are records too (`eastwall observe --type anomaly`).
            if let Some(d) = ctx
                .detector
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_mut()
            {
                let found: Vec<serde_json::Value> =
                    good.iter().flat_map(|(r, _)| d.observe(r)).collect();
                for a in found {
                    warn!(
                        event = %a["anomaly"]["event"],
                        "anomaly: {}",
                        a["eastwall"]["reason"].as_str().unwrap_or_default()
                    );
                    if let Ok(r) = eastwall_flows::record::row_of(&a) {
                        good.push((r, a.to_string()));
                    }
                }
            }
            ctx.store
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(&good, now)
        })
        .await;
        if let Err(e) = stored.map_err(anyhow::Error::from).and_then(|r| r) {
            warn!("storing records of node `{node}`: {e:#}");
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the store failed; send again later\n".to_owned(),
            );
        }
    }
    if !bad.is_empty() {
        warn!(
            remote = %peer.addr,
            node,
            rejected = bad.len(),
            "rejected records: {}",
            bad.first().cloned().unwrap_or_default()
        );
    }
    let problems: Vec<&String> = bad.iter().take(MAX_PROBLEMS).collect();
    let body = serde_json::json!({
        "accepted": accepted,
        "rejected": bad.len(),
        "problems": problems,
    });
    answer(StatusCode::OK, "application/json", body.to_string())
}

/// The filter a query's parameters say.
fn filter_of(query: &str) -> Result<(Filter, Option<i64>, usize), String> {
    let mut f = Filter::default();
    let mut after = None;
    let mut limit = 100;
    for (k, v) in form_urlencoded(query) {
        let time = |v: &str| {
            v.parse::<i64>()
                .ok()
                .or_else(|| eastwall_flows::record::unix_micros(v))
                .ok_or_else(|| format!("`{k}`: {v:?} is not a time"))
        };
        match k.as_str() {
            "from" => f.from.push(EndIs::parse(&v)?),
            "to" => f.to.push(EndIs::parse(&v)?),
            "verdict" => f.verdict = Some(v),
            "rule" => f.rule = Some(v),
            "proto" => f.proto = Some(v),
            "port" => f.port = Some(v.parse().map_err(|_| format!("`port`: {v:?}"))?),
            "method" => f.method = Some(v),
            "path" => f.path = Some(v),
            "type" => f.event_types.push(v),
            "node" => f.node = Some(v),
            "since" => f.since_us = Some(time(&v)?),
            "until" => f.until_us = Some(time(&v)?),
            "after" => after = Some(v.parse().map_err(|_| format!("`after`: {v:?}"))?),
            "limit" => {
                limit = v
                    .parse::<usize>()
                    .map_err(|_| format!("`limit`: {v:?}"))?
                    .clamp(1, MAX_LIMIT)
            }
            other => return Err(format!("unknown parameter `{other}`")),
        }
    }
    Ok((f, after, limit))
}

/// `k=v&...`, percent-decoded (`+` is a space): a query string or an HTML form.
pub(crate) fn form_urlencoded(q: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%'
                && i + 2 < b.len()
                && let Ok(x) =
                    u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
            {
                out.push(x);
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(kv), String::new()),
        })
        .collect()
}

async fn query(req: Request<Incoming>, ctx: &Arc<Ctx>) -> Response<Full<Bytes>> {
    let (filter, after, limit) = match filter_of(req.uri().query().unwrap_or("")) {
        Ok(x) => x,
        Err(why) => return text(StatusCode::BAD_REQUEST, format!("{why}\n")),
    };
    let ctx = ctx.clone();
    let found = tokio::task::spawn_blocking(move || {
        ctx.store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .query(&filter, after, limit)
    })
    .await;
    match found.map_err(anyhow::Error::from).and_then(|r| r) {
        Ok(page) => {
            // Following goes on after the last record looked at, kept or not.
            let last = match (after, page.rows.last()) {
                (Some(_), _) => page.scanned_to.or(after).unwrap_or(0),
                (None, Some((id, _))) => *id,
                (None, None) => page.scanned_to.unwrap_or(0),
            };
            let mut body = String::new();
            for (_, raw) in page.rows {
                body.push_str(&raw);
                body.push('\n');
            }
            let mut r = answer(StatusCode::OK, "application/x-ndjson", body);
            if let Ok(v) = hyper::header::HeaderValue::from_str(&last.to_string()) {
                r.headers_mut().insert("x-eastwall-last-id", v);
            }
            r.headers_mut().insert(
                "x-eastwall-more",
                hyper::header::HeaderValue::from_static(if page.more { "1" } else { "0" }),
            );
            r
        }
        Err(e) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the store: {e:#}\n"),
        ),
    }
}

async fn edges(req: Request<Incoming>, ctx: &Arc<Ctx>) -> Response<Full<Bytes>> {
    let (since, until) = match filter_of(req.uri().query().unwrap_or("")) {
        Ok((f, _, _)) => (f.since_us.unwrap_or(0), f.until_us.unwrap_or(i64::MAX)),
        Err(why) => return text(StatusCode::BAD_REQUEST, format!("{why}\n")),
    };
    let ctx = ctx.clone();
    let found = tokio::task::spawn_blocking(move || {
        ctx.store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .edges(since, until)
    })
    .await;
    match found.map_err(anyhow::Error::from).and_then(|r| r) {
        Ok(edges) => match serde_json::to_string(&edges) {
            Ok(body) => answer(StatusCode::OK, "application/json", body),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
        },
        Err(e) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the store: {e:#}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const REC: &str = r#"{"timestamp":"2026-12-05T10:00:00Z","event_type":"flow","src_ip":"10.0.1.2","dest_ip":"10.0.2.2","dest_port":5432,"proto":"TCP","eastwall":{"node":"hostA","src":{},"dest":{},"policy":{"verdict":"allow","rule":"r"}}}"#;

    #[test]
    fn a_batch_keeps_its_good_lines_and_says_why_the_others_are_not() {
        let now = eastwall_flows::record::unix_micros("2026-12-05T10:01:00Z").unwrap();
        let other = REC.replace("\"node\":\"hostA\"", "\"node\":\"hostB\"");
        let future = REC.replace("10:00:00Z", "11:00:00Z");
        let huge = "x".repeat(300_000);
        let alert = r#"{"timestamp":"2026-12-05T10:00:00Z","event_type":"alert","src_ip":"10.0.1.2","dest_ip":"10.0.2.2","dest_port":80,"proto":"TCP","alert":{"signature_id":9},"eastwall":{"src_identity":"spiffe://x/wl/a"}}"#;
        let body = [REC, "garbage", &other, &future, &huge, "\u{0}", alert, ""].join("\n");
        let mut bytes = body.into_bytes();
        bytes.extend_from_slice(b"\n\xff\xfe\n");
        let (good, bad) = check_batch(&bytes, "hostA", now);
        assert_eq!(good.len(), 2);
        // The alert, which names no node, is the sender's.
        assert_eq!(
            (good[1].0.event_type.as_str(), good[1].0.node.as_str()),
            ("alert", "hostA")
        );
        let all = bad.join("\n");
        for expected in [
            "line 2: not JSON",
            "line 3: a record of node `hostB` sent by node `hostA`",
            "line 4: its timestamp is 3540 s ahead",
            "line 5: 300000 bytes",
            "line 6: not JSON",
            "line 9: not UTF-8",
        ] {
            assert!(all.contains(expected), "{expected}\n{all}");
        }
    }

    #[test]
    fn query_parameters() {
        let (f, after, limit) =
            filter_of("from=app%3Aweb&to=db&verdict=deny&port=5432&since=2026-12-05T10%3A00%3A00Z&after=7&limit=999999").unwrap();
        assert_eq!(f.from, [EndIs::App("web".into())]);
        assert_eq!(f.to, [EndIs::Named("db".into())]);
        assert_eq!((f.verdict.as_deref(), f.port), (Some("deny"), Some(5432)));
        assert_eq!(
            f.since_us,
            eastwall_flows::record::unix_micros("2026-12-05T10:00:00Z")
        );
        assert_eq!((after, limit), (Some(7), MAX_LIMIT));
        for bad in [
            "colour=red",
            "port=x",
            "since=yesterday",
            "from=kind:x",
            "after=-",
        ] {
            assert!(filter_of(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn who_may_do_what() {
        let peer = |id: &str| Peer {
            identity: Ok(SpiffeId::parse(id).unwrap()),
            addr: "127.0.0.1:1".parse().unwrap(),
        };
        assert_eq!(
            client_of(&peer("spiffe://corp.example/node/hostA")),
            Ok(Client::Node("hostA".into()))
        );
        assert_eq!(
            client_of(&peer("spiffe://corp.example/operator/alice")),
            Ok(Client::Operator("alice".into()))
        );
        assert!(client_of(&peer("spiffe://corp.example/wl/web")).is_err());
        assert!(client_of(&peer("spiffe://corp.example/node/a/b")).is_err());
    }
}
