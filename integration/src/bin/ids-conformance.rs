//! eastwall's IDS engine over pcaps, the way the node drives it, and the comparison with
//! Suricata's alerts on the same pcaps.
//!
//! ```text
//! ids-conformance run RULES… -- PCAP…            sids per flow, one line per flow
//! ids-conformance compare EVE RULES… -- PCAP…    agreement with Suricata's eve.json
//! ```
//!
//! RULES are `.rules` files or directories of them. Variables are the node's east-west
//! defaults (`HOME_NET` and `EXTERNAL_NET` both `any`); the script runs Suricata with the
//! same. TCP is reassembled per direction from the three-way handshake (out-of-order
//! segments are held, retransmitted bytes dropped, FIN ends a direction); every in-order
//! payload goes to `FlowInspector::stream`, then to an HTTP/1 parser (httparse) that calls
//! the `http_*` methods, or to a ClientHello reader for TLS; port 53 flows are DNS.

use anyhow::{Context, Result, bail};
use eastwall_ids::{
    AppProto, Classifications, Dir, Engine, FlowInspector, FlowMeta, HttpRequest, HttpResponse,
    HttpVersion, Rule, Selection, Timestamp, Vars, parse_rules,
};
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use pcap_file::pcap::PcapReader;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Out-of-order bytes held per direction.
const MAX_PENDING: usize = 1 << 20;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(mode) = args.first() else {
        bail!(
            "usage: ids-conformance run RULES… -- PCAP… | compare EVE RULES… -- PCAP… | memory RULES… -- PCAP…"
        );
    };
    let split = args
        .iter()
        .position(|a| a == "--")
        .context("missing `--` before the pcaps")?;
    let pcaps: Vec<PathBuf> = args[split + 1..].iter().map(PathBuf::from).collect();
    let (eve, rule_args) = match mode.as_str() {
        "run" | "memory" => (None, &args[1..split]),
        "compare" => (Some(PathBuf::from(&args[1])), &args[2..split]),
        other => bail!("unknown mode `{other}`"),
    };
    if mode == "memory" {
        return memory(&args[1..split], &pcaps);
    }
    let rules = load_rules(rule_args)?;
    let mut ours: BTreeMap<String, BTreeMap<SocketAddr, BTreeSet<u32>>> = BTreeMap::new();
    for pcap in &pcaps {
        // A fresh engine per pcap, as Suricata runs once per pcap: thresholds start at zero.
        let (engine, _) = Engine::build(
            &rules,
            &Vars::east_west(),
            &Classifications::suricata_defaults(),
            &Selection::all(),
        );
        let flows = run_pcap(&Arc::new(engine), pcap)?;
        let name = pcap
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        ours.insert(name, flows);
    }
    match eve {
        None => {
            for (pcap, flows) in &ours {
                for (client, sids) in flows {
                    let list: Vec<String> = sids.iter().map(u32::to_string).collect();
                    println!("{pcap}\t{client}\t{}", list.join(","));
                }
            }
        }
        Some(eve) => compare(&ours, &read_eve(&eve)?),
    }
    Ok(())
}

/// Bytes the allocator holds for live allocations, in MiB.
fn live_mib() -> f64 {
    let _ = tikv_jemalloc_ctl::epoch::advance();
    tikv_jemalloc_ctl::stats::allocated::read().unwrap_or(0) as f64 / (1 << 20) as f64
}

/// The engine's memory as a node holds it, after building it and after inspecting the
/// pcaps' traffic with it (one engine for all, as a long-running node): expressions are
/// compiled when traffic first reaches them.
fn memory(rule_args: &[String], pcaps: &[PathBuf]) -> Result<()> {
    let before = live_mib();
    let rules = load_rules(rule_args)?;
    let (engine, _) = Engine::build(
        &rules,
        &Vars::east_west(),
        &Classifications::suricata_defaults(),
        &Selection::all(),
    );
    drop(rules);
    let engine = Arc::new(engine);
    let built = live_mib() - before;
    let (exprs, compiled) = engine.expressions();
    println!(
        "engine of {} rules: {built:.0} MiB live; {exprs} pcre expressions, {compiled} compiled",
        engine.rule_count()
    );
    let mut flows = 0;
    for pcap in pcaps {
        flows += run_pcap(&engine, pcap)?.len();
    }
    let (_, compiled) = engine.expressions();
    println!(
        "after {flows} flows of {} pcaps: {:.0} MiB live; {compiled} pcre expressions compiled",
        pcaps.len(),
        live_mib() - before
    );
    Ok(())
}

fn load_rules(paths: &[String]) -> Result<Vec<Rule>> {
    let paths: Vec<PathBuf> = paths.iter().map(PathBuf::from).collect();
    let files = eastwall_node::ids::rule_files(&paths, Path::new(""))?;
    let mut rules = Vec::new();
    let (mut skipped, mut errors) = (0, 0);
    for f in &files {
        let text = std::fs::read_to_string(f).with_context(|| format!("{}", f.display()))?;
        let parsed = parse_rules(&f.to_string_lossy(), &text);
        skipped += parsed.skipped.len();
        errors += parsed.errors.len();
        rules.extend(parsed.rules);
    }
    let (_, report) = Engine::build(
        &rules,
        &Vars::east_west(),
        &Classifications::suricata_defaults(),
        &Selection::all(),
    );
    eprintln!(
        "eastwall: {} rules loaded, {} skipped, {} errors",
        report.loaded,
        skipped + report.skipped.len(),
        errors
    );
    Ok(rules)
}

/// TCP reassembly state of one direction.
#[derive(Default)]
struct Reassembly {
    next: Option<u32>,
    pending: BTreeMap<u32, Vec<u8>>,
    pending_bytes: usize,
    fin_at: Option<u32>,
    ended: bool,
}

impl Reassembly {
    /// Accept a segment; returns in-order bytes now deliverable.
    fn segment(&mut self, seq: u32, data: &[u8], out: &mut Vec<u8>) {
        let Some(next) = self.next else { return };
        let offset = seq.wrapping_sub(next) as i32;
        if offset <= 0 {
            let skip = offset.unsigned_abs() as usize;
            if skip < data.len() {
                out.extend_from_slice(&data[skip..]);
                self.next = Some(next.wrapping_add((data.len() - skip) as u32));
            }
        } else if self.pending_bytes + data.len() <= MAX_PENDING {
            self.pending_bytes += data.len();
            self.pending.insert(seq, data.to_vec());
        }
        // Held segments that now fit.
        while let Some(next) = self.next {
            let Some((&s, _)) = self
                .pending
                .iter()
                .find(|(s, _)| (s.wrapping_sub(next) as i32) <= 0)
            else {
                break;
            };
            let d = self.pending.remove(&s).unwrap_or_default();
            self.pending_bytes -= d.len();
            let skip = next.wrapping_sub(s) as usize;
            if skip < d.len() {
                out.extend_from_slice(&d[skip..]);
                self.next = Some(next.wrapping_add((d.len() - skip) as u32));
            }
        }
    }

    fn fin_reached(&self) -> bool {
        !self.ended && self.fin_at.is_some() && self.fin_at == self.next
    }
}

/// HTTP/1 message framing of one direction.
#[derive(Default)]
struct HttpStream {
    buf: Vec<u8>,
    body: Body,
}

#[derive(Default, PartialEq)]
enum Body {
    #[default]
    None,
    Length(usize),
    Chunked(ChunkState),
    UntilClose,
}

#[derive(PartialEq)]
enum ChunkState {
    Size,
    Data(usize),
    DataEnd,
    Trailer,
}

struct Flow {
    fi: FlowInspector,
    reasm: [Reassembly; 2],
    http: [HttpStream; 2],
    sids: BTreeSet<u32>,
    /// The last request was HEAD (its response has no body).
    last_head: bool,
    app: AppProto,
    /// The client's first bytes, until the protocol is known.
    sniff: Vec<u8>,
    sniffed: bool,
}

impl Flow {
    fn record(&mut self, v: eastwall_ids::Verdict) {
        // A `pass` match is no alert (Suricata logs none; the node writes none).
        self.sids.extend(
            v.alerts
                .iter()
                .filter(|a| a.action != eastwall_ids::RuleAction::Pass)
                .map(|a| a.sid),
        );
    }

    fn deliver(&mut self, dir: Dir, data: &[u8], now: Timestamp) {
        let v = self.fi.stream(dir, data, now);
        self.record(v);
        let sniffed;
        let data = if dir == Dir::ToServer && !self.sniffed && self.fi_app() == AppProto::Unknown {
            // Protocol detection on the client's first bytes, however they were segmented.
            self.sniff.extend_from_slice(data);
            let methods: [&[u8]; 9] = [
                b"GET ",
                b"POST ",
                b"HEAD ",
                b"PUT ",
                b"DELETE ",
                b"OPTIONS ",
                b"PATCH ",
                b"TRACE ",
                b"CONNECT ",
            ];
            let s = &self.sniff;
            let app = if methods.iter().any(|m| s.starts_with(m)) {
                Some(AppProto::Http1)
            } else if s.len() >= 2 && s[0] == 0x16 && s[1] == 0x03 {
                Some(AppProto::Tls)
            } else if s.len() >= 8 || !methods.iter().any(|m| m.starts_with(s)) {
                Some(AppProto::Unknown)
            } else {
                None
            };
            let Some(app) = app else { return };
            self.sniffed = true;
            if app != AppProto::Unknown {
                self.set_app(app);
            }
            sniffed = std::mem::take(&mut self.sniff);
            &sniffed[..]
        } else {
            data
        };
        // Only HTTP is parsed here: the inspector reads TLS hellos and recognises SMTP and
        // FTP from the stream itself.
        if self.fi_app() == AppProto::Http1 {
            self.http(dir, data, now);
        }
    }

    fn fi_app(&self) -> AppProto {
        self.app
    }

    fn set_app(&mut self, p: AppProto) {
        self.app = p;
        self.fi.set_app_proto(p);
    }

    fn http(&mut self, dir: Dir, data: &[u8], now: Timestamp) {
        let d = dir_index(dir);
        self.http[d].buf.extend_from_slice(data);
        loop {
            let progressed = match std::mem::take(&mut self.http[d].body) {
                Body::None => self.http_head(dir, now),
                Body::Length(n) => {
                    let take = n.min(self.http[d].buf.len());
                    let chunk: Vec<u8> = self.http[d].buf.drain(..take).collect();
                    let left = n - take;
                    self.body(dir, &chunk, left == 0, now);
                    self.http[d].body = if left == 0 {
                        Body::None
                    } else {
                        Body::Length(left)
                    };
                    left == 0 && !self.http[d].buf.is_empty()
                }
                Body::UntilClose => {
                    let chunk = std::mem::take(&mut self.http[d].buf);
                    self.body(dir, &chunk, false, now);
                    self.http[d].body = Body::UntilClose;
                    false
                }
                Body::Chunked(state) => self.chunked(dir, state, now),
            };
            if !progressed {
                break;
            }
        }
    }

    fn body(&mut self, dir: Dir, chunk: &[u8], end: bool, now: Timestamp) {
        let v = match dir {
            Dir::ToServer => self.fi.http_request_body(chunk, end, now),
            Dir::ToClient => self.fi.http_response_body(chunk, end, now),
        };
        self.record(v);
    }

    /// Decode chunked framing; returns whether the message ended with bytes left.
    fn chunked(&mut self, dir: Dir, mut state: ChunkState, now: Timestamp) -> bool {
        let d = dir_index(dir);
        loop {
            let buf = &mut self.http[d].buf;
            match state {
                ChunkState::Size => {
                    let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
                        break;
                    };
                    let line = String::from_utf8_lossy(&buf[..eol]).into_owned();
                    buf.drain(..eol + 2);
                    let size =
                        usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                            .unwrap_or(0);
                    state = if size == 0 {
                        ChunkState::Trailer
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(n) => {
                    if buf.is_empty() {
                        break;
                    }
                    let take = n.min(buf.len());
                    let chunk: Vec<u8> = buf.drain(..take).collect();
                    self.body(dir, &chunk, false, now);
                    state = if take == n {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(n - take)
                    };
                }
                ChunkState::DataEnd => {
                    if buf.len() < 2 {
                        break;
                    }
                    buf.drain(..2);
                    state = ChunkState::Size;
                }
                ChunkState::Trailer => {
                    let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
                        break;
                    };
                    buf.drain(..eol + 2);
                    if eol == 0 {
                        self.body(dir, b"", true, now);
                        self.http[d].body = Body::None;
                        return !self.http[d].buf.is_empty();
                    }
                }
            }
        }
        self.http[d].body = Body::Chunked(state);
        false
    }

    /// Parse a message head if complete; returns whether one was consumed.
    fn http_head(&mut self, dir: Dir, now: Timestamp) -> bool {
        let d = dir_index(dir);
        let buf = std::mem::take(&mut self.http[d].buf);
        let mut storage = [httparse::EMPTY_HEADER; 96];
        let consumed = match dir {
            Dir::ToServer => {
                let mut req = httparse::Request::new(&mut storage);
                match req.parse(&buf) {
                    Ok(httparse::Status::Complete(n)) => {
                        let headers: Vec<(&str, &[u8])> =
                            req.headers.iter().map(|h| (h.name, h.value)).collect();
                        let method = req.method.unwrap_or("GET");
                        let r = HttpRequest {
                            method,
                            uri_raw: req.path.unwrap_or("/").as_bytes(),
                            host: None,
                            headers: &headers,
                            version: version(req.version),
                        };
                        let v = self.fi.http_request(&r, now);
                        self.last_head = method.eq_ignore_ascii_case("HEAD");
                        self.record(v);
                        self.http[d].body = framing(&headers, false);
                        Some(n)
                    }
                    Ok(httparse::Status::Partial) => None,
                    Err(_) => {
                        // Not HTTP after all: stop parsing this direction.
                        self.http[d].body = Body::UntilClose;
                        Some(0)
                    }
                }
            }
            Dir::ToClient => {
                let mut resp = httparse::Response::new(&mut storage);
                match resp.parse(&buf) {
                    Ok(httparse::Status::Complete(n)) => {
                        let headers: Vec<(&str, &[u8])> =
                            resp.headers.iter().map(|h| (h.name, h.value)).collect();
                        let status = resp.code.unwrap_or(0);
                        let r = HttpResponse {
                            status,
                            reason: resp.reason.unwrap_or(""),
                            headers: &headers,
                            version: version(resp.version),
                        };
                        let v = self.fi.http_response(&r, now);
                        self.record(v);
                        let no_body = self.last_head
                            || status == 204
                            || status == 304
                            || (100..200).contains(&status);
                        self.http[d].body = if no_body {
                            Body::None
                        } else {
                            framing(&headers, true)
                        };
                        Some(n)
                    }
                    Ok(httparse::Status::Partial) => None,
                    Err(_) => {
                        self.http[d].body = Body::UntilClose;
                        Some(0)
                    }
                }
            }
        };
        match consumed {
            Some(n) => {
                self.http[d].buf = buf[n..].to_vec();
                n > 0 && (!self.http[d].buf.is_empty() || self.http[d].body != Body::None)
            }
            None => {
                self.http[d].buf = buf;
                false
            }
        }
    }
}

impl Flow {
    fn new(engine: &Arc<Engine>, meta: FlowMeta) -> Self {
        let mut f = Flow {
            fi: FlowInspector::new(engine.clone(), meta),
            reasm: [Reassembly::default(), Reassembly::default()],
            http: [HttpStream::default(), HttpStream::default()],
            sids: BTreeSet::new(),
            last_head: false,
            app: AppProto::Unknown,
            sniff: Vec::new(),
            sniffed: false,
        };
        if meta.dst.port() == 53 {
            f.set_app(AppProto::Dns);
        }
        f
    }
}

fn version(v: Option<u8>) -> HttpVersion {
    match v {
        Some(0) => HttpVersion::Http10,
        _ => HttpVersion::Http11,
    }
}

fn framing(headers: &[(&str, &[u8])], response: bool) -> Body {
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| String::from_utf8_lossy(v).trim().to_ascii_lowercase())
    };
    if get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        return Body::Chunked(ChunkState::Size);
    }
    match get("content-length").and_then(|l| l.parse::<usize>().ok()) {
        Some(0) => Body::None,
        Some(n) => Body::Length(n),
        None if response => Body::UntilClose,
        None => Body::None,
    }
}

fn dir_index(d: Dir) -> usize {
    match d {
        Dir::ToServer => 0,
        Dir::ToClient => 1,
    }
}

/// Run one pcap; alerted sids per flow (keyed by the client's address).
fn run_pcap(engine: &Arc<Engine>, path: &Path) -> Result<BTreeMap<SocketAddr, BTreeSet<u32>>> {
    let file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let mut reader = PcapReader::new(file)?;
    let mut flows: HashMap<(SocketAddr, SocketAddr), Flow> = HashMap::new();
    let mut done: BTreeMap<SocketAddr, BTreeSet<u32>> = BTreeMap::new();
    while let Some(pkt) = reader.next_packet() {
        let pkt = pkt?;
        let now = Timestamp::from_unix(pkt.timestamp);
        let Ok(sliced) = SlicedPacket::from_ethernet(&pkt.data) else {
            continue;
        };
        let (src_ip, dst_ip): (IpAddr, IpAddr) = match &sliced.net {
            Some(NetSlice::Ipv4(ip)) => (
                ip.header().source_addr().into(),
                ip.header().destination_addr().into(),
            ),
            Some(NetSlice::Ipv6(ip)) => (
                ip.header().source_addr().into(),
                ip.header().destination_addr().into(),
            ),
            _ => continue,
        };
        let Some(TransportSlice::Tcp(tcp)) = &sliced.transport else {
            continue;
        };
        let src = SocketAddr::new(src_ip, tcp.source_port());
        let dst = SocketAddr::new(dst_ip, tcp.destination_port());
        if tcp.syn() && !tcp.ack() {
            let mut flow = Flow::new(engine, FlowMeta { src, dst });
            flow.reasm[0].next = Some(tcp.sequence_number().wrapping_add(1));
            flows.insert((src, dst), flow);
            continue;
        }
        let (key, dir) = if flows.contains_key(&(src, dst)) {
            ((src, dst), Dir::ToServer)
        } else if flows.contains_key(&(dst, src)) {
            ((dst, src), Dir::ToClient)
        } else {
            continue;
        };
        let Some(flow) = flows.get_mut(&key) else {
            continue;
        };
        let d = dir_index(dir);
        if tcp.syn() {
            flow.reasm[d].next = Some(tcp.sequence_number().wrapping_add(1));
            continue;
        }
        let mut out = Vec::new();
        flow.reasm[d].segment(tcp.sequence_number(), tcp.payload(), &mut out);
        if tcp.fin() {
            flow.reasm[d].fin_at = Some(
                tcp.sequence_number()
                    .wrapping_add(tcp.payload().len() as u32),
            );
        }
        if !out.is_empty() {
            flow.deliver(dir, &out, now);
        }
        if flow.reasm[d].fin_reached() {
            flow.reasm[d].ended = true;
            if flow.fi_app() == AppProto::Http1 {
                let hs = &mut flow.http[d];
                if hs.body == Body::UntilClose {
                    hs.body = Body::None;
                    flow.body(dir, b"", true, now);
                }
            }
            let v = flow.fi.stream_end(dir, now);
            flow.record(v);
        }
        if (tcp.rst() || (flow.reasm[0].ended && flow.reasm[1].ended))
            && let Some(mut f) = flows.remove(&key)
        {
            let v = f.fi.close(now);
            f.record(v);
            done.entry(key.0).or_default().extend(f.sids);
        }
    }
    for (key, mut f) in flows {
        let v = f.fi.close(Timestamp::default());
        f.record(v);
        done.entry(key.0).or_default().extend(f.sids);
    }
    Ok(done)
}

/// Suricata's alerted sids per flow (keyed by the client's address).
fn read_eve(path: &Path) -> Result<BTreeMap<SocketAddr, BTreeSet<u32>>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let mut out: BTreeMap<SocketAddr, BTreeSet<u32>> = BTreeMap::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["event_type"] != "alert" {
            continue;
        }
        let addr = |ip: &serde_json::Value, port: &serde_json::Value| -> Option<SocketAddr> {
            Some(SocketAddr::new(
                ip.as_str()?.parse().ok()?,
                u16::try_from(port.as_u64()?).ok()?,
            ))
        };
        let client = if v["direction"] == "to_client" {
            addr(&v["dest_ip"], &v["dest_port"])
        } else {
            addr(&v["src_ip"], &v["src_port"])
        };
        let (Some(client), Some(sid)) = (client, v["alert"]["signature_id"].as_u64()) else {
            continue;
        };
        out.entry(client).or_default().insert(sid as u32);
    }
    Ok(out)
}

fn compare(
    ours: &BTreeMap<String, BTreeMap<SocketAddr, BTreeSet<u32>>>,
    theirs: &BTreeMap<SocketAddr, BTreeSet<u32>>,
) {
    let (mut both, mut only_s, mut only_e) = (0usize, 0usize, 0usize);
    let mut only_s_sids: BTreeMap<u32, usize> = BTreeMap::new();
    let mut only_e_sids: BTreeMap<u32, usize> = BTreeMap::new();
    println!(
        "{:<32} {:>6} {:>6} {:>10} {:>10}",
        "pcap", "flows", "both", "only-suri", "only-east"
    );
    for (pcap, flows) in ours {
        let (mut b, mut s, mut e) = (0, 0, 0);
        for (client, sids) in flows {
            let empty = BTreeSet::new();
            let suri = theirs.get(client).unwrap_or(&empty);
            b += sids.intersection(suri).count();
            for sid in suri.difference(sids) {
                s += 1;
                *only_s_sids.entry(*sid).or_default() += 1;
            }
            for sid in sids.difference(suri) {
                e += 1;
                *only_e_sids.entry(*sid).or_default() += 1;
            }
        }
        println!("{pcap:<32} {:>6} {b:>6} {s:>10} {e:>10}", flows.len());
        both += b;
        only_s += s;
        only_e += e;
    }
    let total = both + only_s + only_e;
    println!(
        "\nalerts (flow, sid): {total} in either, {both} in both, {only_s} only Suricata, {only_e} only eastwall"
    );
    if total > 0 {
        println!("agreement: {:.1}%", 100.0 * both as f64 / total as f64);
    }
    let sids = |m: &BTreeMap<u32, usize>| {
        m.iter()
            .map(|(s, n)| {
                if *n > 1 {
                    format!("{s}(x{n})")
                } else {
                    s.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!("only Suricata: {}", sids(&only_s_sids));
    println!("only eastwall: {}", sids(&only_e_sids));
}
