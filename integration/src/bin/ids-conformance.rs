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
//! payload goes to `FlowInspector::stream`, which recognises HTTP/1, TLS, SMTP and FTP and
//! reads them itself, as in the node; port 53 flows are DNS.

use anyhow::{Context, Result, bail};
use eastwall_ids::{
    AppProto, Classifications, Dir, Engine, FlowInspector, FlowMeta, Rule, Selection, Timestamp,
    Vars, parse_rules,
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
    // Hyperscan allocates its databases itself: added to what jemalloc counts.
    let hyperscan = engine.hyperscan_bytes() as f64 / (1 << 20) as f64;
    let built = live_mib() - before + hyperscan;
    let (exprs, compiled) = engine.expressions();
    println!(
        "engine of {} rules: {built:.0} MiB live (Hyperscan {hyperscan:.0} MiB of it); {exprs} pcre expressions, {compiled} compiled",
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
        live_mib() - before + hyperscan
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

struct Flow {
    fi: FlowInspector,
    reasm: [Reassembly; 2],
    sids: BTreeSet<u32>,
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

    /// In-order bytes of one direction: the inspector recognises HTTP/1, TLS, SMTP and FTP
    /// and reads them itself, as in the node.
    fn deliver(&mut self, dir: Dir, data: &[u8], now: Timestamp) {
        let v = self.fi.stream(dir, data, now);
        self.record(v);
    }
}

impl Flow {
    fn new(engine: &Arc<Engine>, meta: FlowMeta) -> Self {
        let mut fi = FlowInspector::new(engine.clone(), meta);
        if meta.dst.port() == 53 {
            fi.set_app_proto(AppProto::Dns);
        }
        Flow {
            fi,
            reasm: [Reassembly::default(), Reassembly::default()],
            sids: BTreeSet::new(),
        }
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
