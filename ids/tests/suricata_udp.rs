//! UDP side by side with Suricata 7: the same datagrams through Suricata (from a pcap this
//! test writes) and through eastwall's inspector (one `FlowInspector::new_udp` per session,
//! each datagram fed to `datagram`), with the same rules and variables; every alert is
//! compared as (packet number, sid), since on UDP both engines alert per datagram.
//!
//! The traffic: hand-written sessions for the rules below (a pattern split across two
//! datagrams, positions, `dsize`, directions and `flow:established`, port lists and
//! variables, `<>`, thresholds, flowbits, `byte_test`/`pcre`/`isdataat`, negation, `ip` rules,
//! DNS queries on port 53 and elsewhere), one session per ET Open `udp`/`ip` rule built from
//! its own contents, and DNS queries for names taken from ET Open `dns.query` rules. Rules:
//! the local ones plus all of ET Open (`EASTWALL_ET_OPEN`, default
//! `/work/shared/ids/et-open`, left out when missing). Only sids eastwall loads are compared.
//!
//! ```text
//! cargo test -p eastwall-ids --test suricata_udp -- --ignored --nocapture
//! ```
//! Needs `suricata` (Suricata 7; `../shared/recipes/suricata.sh install`) and
//! `/etc/suricata/suricata.yaml`.

use eastwall_ids::rule::{Buffer, MatchItem, PortExpr, Protocol, SizeCmp};
use eastwall_ids::{
    Classifications, Dir, Engine, FlowInspector, FlowMeta, Rule, Selection, Timestamp, Transport,
    Vars, parse_rules,
};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

const LOCAL: &str = r#"
alert udp any any -> any 9001 (msg:"evil"; content:"EVIL-PAYLOAD"; sid:9100001; rev:1;)
alert udp any any -> any 9002 (msg:"ping at start"; content:"PING"; depth:4; sid:9100002; rev:1;)
alert udp any any -> any 9002 (msg:"pong at 2"; content:"PONG"; offset:2; depth:6; sid:9100003; rev:1;)
alert udp any any -> any 9003 (msg:"dsize 4"; dsize:4; content:"AB"; depth:2; sid:9100004; rev:1;)
alert udp any any -> any 9003 (msg:"dsize big"; dsize:>100; sid:9100005; rev:1;)
alert udp any any -> any 9003 (msg:"dsize 0"; dsize:0; sid:9100006; rev:1;)
alert udp any any -> any 5060 (msg:"invite"; content:"INVITE"; depth:6; sid:9100007; rev:1;)
alert udp any any -> any any (msg:"sip reply"; flow:to_client; content:"SIP/2.0 200"; depth:11; sid:9100008; rev:1;)
alert udp any any -> any any (msg:"established ack"; flow:established,to_server; content:"ACK"; sid:9100009; rev:1;)
alert udp any any -> any any (msg:"established reply"; flow:established,to_client; content:"200 OK"; sid:9100010; rev:1;)
alert udp any 5060 <> any any (msg:"bye"; content:"BYE"; sid:9100011; rev:1;)
alert udp any [1024:,!40001] -> any $SIP_PORTS (msg:"sip ports"; content:"XPORT"; sid:9100012; rev:1;)
alert udp any any -> any !$SIP_PORTS (msg:"not sip ports"; content:"XPORT"; sid:9100013; rev:1;)
alert udp any any -> any 9004 (msg:"probe"; content:"probe"; threshold:type limit, track by_src, count 2, seconds 60; sid:9100014; rev:1;)
alert udp any any -> any 9005 (msg:"login"; flow:to_server; content:"LOGIN"; flowbits:set,udp.login; flowbits:noalert; sid:9100015; rev:1;)
alert udp any any -> any any (msg:"ok after login"; flow:to_client; content:"OK"; flowbits:isset,udp.login; sid:9100016; rev:1;)
alert dns any any -> any any (msg:"dns query"; dns.query; content:"bad.test"; nocase; sid:9100017; rev:1;)
alert udp any any -> any 53 (msg:"udp dns query"; dns.query; content:"bad"; nocase; sid:9100018; rev:1;)
alert dns any any -> any any (msg:"dns raw"; content:"|04|test|00|"; sid:9100019; rev:1;)
alert udp any any -> any 9006 (msg:"binary"; content:"|00 01|"; depth:2; byte_test:2,>,1000,0,relative; content:"user="; distance:2; pcre:"/^[a-z]+!/R"; sid:9100020; rev:1;)
alert ip any any -> any 9007 (msg:"ip rule"; content:"uid=0|28|root|29|"; sid:9100021; rev:1;)
alert udp any any -> any 9008 (msg:"negated"; content:"cmd="; content:!"safe"; distance:0; sid:9100022; rev:1;)
alert tcp any any -> any any (msg:"tcp only"; content:"EVIL-PAYLOAD"; sid:9100023; rev:1;)
"#;

/// `SIP_PORTS` is not in Suricata's default configuration: both engines get it.
const SIP_PORTS: &str = "[5060,5061]";

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 20);

/// One UDP session: the client sends the first datagram.
struct Session {
    client: SocketAddr,
    server: SocketAddr,
    datagrams: Vec<(Dir, Vec<u8>)>,
}

/// Sessions with distinct client addresses, so no two share a flow in Suricata.
#[derive(Default)]
struct Sessions(Vec<Session>);

impl Sessions {
    fn add(&mut self, client_port: u16, server_port: u16, datagrams: Vec<(Dir, Vec<u8>)>) {
        let n = self.0.len() as u32 + 1;
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 1, 0, 0)) + n);
        self.0.push(Session {
            client: SocketAddr::from((ip, client_port)),
            server: SocketAddr::from((SERVER_IP, server_port)),
            datagrams,
        });
    }
}

fn c(b: impl AsRef<[u8]>) -> (Dir, Vec<u8>) {
    (Dir::ToServer, b.as_ref().to_vec())
}

fn s(b: impl AsRef<[u8]>) -> (Dir, Vec<u8>) {
    (Dir::ToClient, b.as_ref().to_vec())
}

fn dns_query(name: &str, id: u16) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        let l = &label.as_bytes()[..label.len().min(63)];
        m.push(l.len() as u8);
        m.extend_from_slice(l);
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    m
}

fn dns_response(query: &[u8]) -> Vec<u8> {
    let mut m = query.to_vec();
    m[2] = 0x81;
    m[3] = 0x83; // NXDOMAIN
    m
}

fn hand_written(out: &mut Sessions) {
    // No reassembly: the pattern split across two datagrams is not seen.
    out.add(40000, 9001, vec![c("xx EVIL-"), c("PAYLOAD")]);
    out.add(
        40000,
        9001,
        vec![
            c("an EVIL-PAYLOAD"),
            c("EVIL-PAYLOAD again"),
            s("EVIL-PAYLOAD back"),
        ],
    );
    out.add(
        40000,
        9002,
        vec![c("..PING"), c("PING"), c("xxPONG"), c("xxxxxPONG")],
    );
    out.add(
        40000,
        9003,
        vec![
            c("ABCD"),
            c("ABCDE"),
            c("AB"),
            c(""),
            c([b'x'; 101]),
            c([b'x'; 100]),
        ],
    );
    out.add(
        40000,
        5060,
        vec![
            c("INVITE sip:bob ACK 200 OK"),
            s("SIP/2.0 200 OK"),
            c("ACK"),
            c("BYE"),
            s("BYE"),
        ],
    );
    out.add(40000, 5061, vec![c("XPORT")]);
    out.add(40001, 5061, vec![c("XPORT")]);
    out.add(1000, 5060, vec![c("XPORT")]);
    out.add(40000, 5062, vec![c("XPORT")]);
    out.add(40000, 9004, vec![c("probe"); 5]);
    out.add(40000, 9005, vec![c("hello"), s("OK")]);
    out.add(40000, 9005, vec![c("LOGIN bob"), s("OK")]);
    let q1 = dns_query("BAD.test", 1);
    out.add(
        40000,
        53,
        vec![
            c(&q1),
            s(dns_response(&q1)),
            c(dns_query("www.example.com", 2)),
            c(dns_query("bad.test", 3)),
        ],
    );
    // Not port 53: neither engine takes it for DNS.
    out.add(40000, 5353, vec![c(dns_query("bad.test", 4))]);
    // The first datagram decides: not DNS, so the session is not.
    out.add(40000, 53, vec![c("hello"), c(dns_query("bad.test", 5))]);
    out.add(
        40000,
        9006,
        vec![
            c(b"\x00\x01\x04\x00user=bob!"),
            c(b"\x00\x01\x01\x00user=bob!"),
        ],
    );
    out.add(
        40000,
        9007,
        vec![c("id: uid=0(root) gid=0"), s("uid=0(root)")],
    );
    out.add(40000, 9008, vec![c("cmd=ls"), c("cmd=safe"), c("cmd=")]);
    out.add(40000, 9009, vec![c("EVIL-PAYLOAD")]);
}

/// A port of a header side, when it names one.
fn port_of(e: &PortExpr, vars: &Vars, depth: usize) -> Option<u16> {
    match e {
        PortExpr::Range(a, _) => Some((*a).max(1)),
        PortExpr::List(items) => items.iter().find_map(|i| port_of(i, vars, depth)),
        PortExpr::Var(v) if depth < 4 => {
            port_of(&PortExpr::parse(vars.get(v)?).ok()?, vars, depth + 1)
        }
        _ => None,
    }
}

/// A datagram made of a raw rule's own contents, placed where its positions ask.
fn payload_of(r: &Rule) -> Vec<u8> {
    let mut p = Vec::new();
    for b in r.buffers.iter().filter(|b| b.buffer == Buffer::Stream) {
        for item in &b.items {
            let MatchItem::Content(c) = item else {
                continue;
            };
            if c.negated {
                continue;
            }
            if let Some(off) = c.offset {
                let off = off as usize;
                if p.len() < off {
                    p.resize(off, b'A');
                }
            } else if let Some(d) = c.distance.filter(|d| *d > 0) {
                p.resize(p.len() + d as usize, b'A');
            }
            p.extend_from_slice(&c.pattern);
        }
    }
    match r.dsize {
        Some(SizeCmp::Eq(n)) => p.resize(n as usize, b'A'),
        Some(SizeCmp::Gt(n)) if p.len() as u64 <= n => p.resize(n as usize + 1, b'A'),
        Some(SizeCmp::Ge(n) | SizeCmp::Between(n, _)) if (p.len() as u64) <= n => {
            p.resize(n as usize + 1, b'A')
        }
        _ => {}
    }
    p.truncate(1400);
    p
}

fn from_et(rules: &[Rule], vars: &Vars, out: &mut Sessions) -> (usize, usize) {
    let mut raw = 0;
    for r in rules
        .iter()
        .filter(|r| matches!(r.protocol, Protocol::Udp | Protocol::Ip))
    {
        let payload = payload_of(r);
        let sp = port_of(&r.src_ports, vars, 0);
        let dp = port_of(&r.dst_ports, vars, 0);
        // The header's source sends the data; it is the server for `to_client` rules, which
        // then answer a first datagram of the client.
        if r.flow.dir == Some(Dir::ToClient) {
            let (client, server) = (dp.unwrap_or(40000), sp.unwrap_or(9999));
            out.add(client, server, vec![c("hello"), s(payload)]);
        } else {
            out.add(sp.unwrap_or(40000), dp.unwrap_or(9999), vec![c(payload)]);
        }
        raw += 1;
    }
    let mut names = 0;
    for r in rules
        .iter()
        .filter(|r| r.protocol == Protocol::Dns)
        .step_by(25)
    {
        for b in r.buffers.iter().filter(|b| b.buffer == Buffer::DnsQuery) {
            let printable = |i: &&MatchItem| {
                matches!(i, MatchItem::Content(x)
                    if !x.negated && x.pattern.iter().all(u8::is_ascii_graphic))
            };
            let Some(MatchItem::Content(content)) = b.items.iter().find(printable) else {
                continue;
            };
            let name = String::from_utf8_lossy(&content.pattern)
                .trim_matches('.')
                .to_string();
            let q = dns_query(&name, 0x2000 + names as u16);
            out.add(40000, 53, vec![c(&q), s(dns_response(&q))]);
            names += 1;
        }
    }
    (raw, names)
}

/// The datagrams of the sessions, in order, as a pcap (Ethernet, IPv4, UDP), one millisecond
/// apart from `t0`.
fn pcap(sessions: &[Session], t0: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    // Global header: magic, v2.4, no zone, no sigfigs, snaplen, Ethernet.
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    let mut n = 0u32;
    for sess in sessions {
        for (dir, payload) in &sess.datagrams {
            let (from, to) = match dir {
                Dir::ToServer => (sess.client, sess.server),
                Dir::ToClient => (sess.server, sess.client),
            };
            let (SocketAddr::V4(from), SocketAddr::V4(to)) = (from, to) else {
                unreachable!("IPv4 sessions");
            };
            let mut frame = Vec::new();
            frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00]);
            let total = 20 + 8 + payload.len();
            let mut ip = vec![0x45, 0];
            ip.extend_from_slice(&(total as u16).to_be_bytes());
            ip.extend_from_slice(&(n as u16).to_be_bytes());
            ip.extend_from_slice(&[0x40, 0, 64, 17, 0, 0]);
            ip.extend_from_slice(&from.ip().octets());
            ip.extend_from_slice(&to.ip().octets());
            let mut sum: u32 = ip
                .chunks(2)
                .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
                .sum();
            while sum > 0xffff {
                sum = (sum & 0xffff) + (sum >> 16);
            }
            ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
            frame.extend_from_slice(&ip);
            frame.extend_from_slice(&from.port().to_be_bytes());
            frame.extend_from_slice(&to.port().to_be_bytes());
            frame.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
            // Checksum 0: none (IPv4).
            frame.extend_from_slice(&[0, 0]);
            frame.extend_from_slice(payload);
            let ts = t0 + Duration::from_millis(u64::from(n));
            out.extend_from_slice(&(ts.as_secs() as u32).to_le_bytes());
            out.extend_from_slice(&ts.subsec_micros().to_le_bytes());
            out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            out.extend_from_slice(&frame);
            n += 1;
        }
    }
    out
}

/// eastwall's alerts as (packet number from 1, sid), as Suricata's `pcap_cnt`.
fn eastwall(engine: &Arc<Engine>, sessions: &[Session], t0: Duration) -> BTreeSet<(u64, u32)> {
    let mut out = BTreeSet::new();
    let mut n = 0u64;
    for sess in sessions {
        let mut fi = FlowInspector::new_udp(
            engine.clone(),
            FlowMeta {
                src: sess.client,
                dst: sess.server,
            },
        );
        for (dir, payload) in &sess.datagrams {
            let now = Timestamp::from_unix(t0 + Duration::from_millis(n));
            n += 1;
            for a in fi.datagram(*dir, payload, now).alerts {
                assert_eq!(a.transport, Transport::Udp);
                out.insert((n, a.sid));
            }
        }
    }
    out
}

fn suricata(pcap: &Path, rules: &Path, logs: &Path) -> BTreeSet<(u64, u32)> {
    let _ = std::fs::remove_dir_all(logs);
    std::fs::create_dir_all(logs).expect("log dir");
    let out = Command::new("suricata")
        .arg("-r")
        .arg(pcap)
        .arg("-S")
        .arg(rules)
        .arg("-l")
        .arg(logs)
        .args(["-k", "none", "--runmode", "single"])
        .args(["-c", "/etc/suricata/suricata.yaml"])
        .args(["--set", "vars.address-groups.HOME_NET=any"])
        .args(["--set", "vars.address-groups.EXTERNAL_NET=any"])
        .args(["--set", &format!("vars.port-groups.SIP_PORTS={SIP_PORTS}")])
        .args(["--set", "outputs.1.eve-log.types.0=alert"])
        .output()
        .expect("suricata runs (install it with ../shared/recipes/suricata.sh install)");
    assert!(
        out.status.success(),
        "suricata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let eve = std::fs::read_to_string(logs.join("eve.json")).expect("eve.json");
    let mut alerts = BTreeSet::new();
    for line in eve.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("EVE line");
        if v["event_type"] != "alert" {
            continue;
        }
        assert_eq!(v["proto"], "UDP", "{line}");
        let cnt = v["pcap_cnt"].as_u64().expect("pcap_cnt");
        let sid = v["alert"]["signature_id"].as_u64().expect("sid") as u32;
        alerts.insert((cnt, sid));
    }
    alerts
}

fn et_open() -> Option<PathBuf> {
    let dir = PathBuf::from(
        std::env::var("EASTWALL_ET_OPEN").unwrap_or_else(|_| "/work/shared/ids/et-open".into()),
    );
    dir.is_dir().then_some(dir)
}

#[test]
#[ignore = "needs Suricata 7: cargo test -p eastwall-ids --test suricata_udp -- --ignored"]
fn udp_alerts_agree_with_suricata() {
    let mut text = LOCAL.to_string();
    if let Some(dir) = et_open() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("ET Open directory")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "rules"))
            .collect();
        files.sort();
        for f in files {
            text.push_str(&std::fs::read_to_string(f).expect("rules file"));
            text.push('\n');
        }
    } else {
        eprintln!("ET Open not found: local rules only");
    }
    let parsed = parse_rules("all.rules", &text);
    let mut vars = Vars::east_west();
    vars.set("SIP_PORTS", SIP_PORTS).expect("port list");
    let (engine, report) = Engine::build(
        &parsed.rules,
        &vars,
        &Classifications::suricata_defaults(),
        &Selection::all(),
    );
    let unresolved: BTreeSet<u32> = report.skipped.iter().filter_map(|s| s.sid).collect();
    let loaded: BTreeSet<u32> = parsed
        .rules
        .iter()
        .map(|r| r.sid)
        .filter(|s| !unresolved.contains(s))
        .collect();
    let local: Vec<Rule> = parsed
        .rules
        .iter()
        .filter(|r| r.sid >= 9_100_000)
        .cloned()
        .collect();
    assert_eq!(local.len(), 23, "every local rule loads");

    let mut sessions = Sessions::default();
    hand_written(&mut sessions);
    let hand = sessions.0.len();
    let (raw, names) = from_et(&parsed.rules, &vars, &mut sessions);
    let sessions = sessions.0;

    let dir = std::env::temp_dir().join(format!("eastwall-suricata-udp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let t0 = Duration::from_secs(1_700_000_000);
    let pcap_path = dir.join("udp.pcap");
    std::fs::write(&pcap_path, pcap(&sessions, t0)).expect("pcap written");
    let rules_path = dir.join("all.rules");
    std::fs::write(&rules_path, &text).expect("rules written");

    let ours = eastwall(&Arc::new(engine), &sessions, t0);
    let theirs: BTreeSet<(u64, u32)> = suricata(&pcap_path, &rules_path, &dir.join("logs"))
        .into_iter()
        .filter(|(_, sid)| loaded.contains(sid))
        .collect();

    let packets: usize = sessions.iter().map(|s| s.datagrams.len()).sum();
    let local_sid = |sid: u32| sid >= 9_100_000;
    let mut by_group: BTreeMap<&str, [usize; 3]> = BTreeMap::new();
    for a in ours.union(&theirs) {
        let g = by_group
            .entry(if local_sid(a.1) {
                "local rules"
            } else {
                "ET Open"
            })
            .or_default();
        let i = match (ours.contains(a), theirs.contains(a)) {
            (true, true) => 0,
            (false, true) => 1,
            _ => 2,
        };
        g[i] += 1;
    }
    println!(
        "{} sessions ({hand} hand-written, {raw} from ET udp/ip rules, {names} ET dns.query names), {packets} datagrams",
        sessions.len()
    );
    println!("rules | alerts in both | only Suricata | only eastwall | sids alerting");
    for (g, [both, suri, ew]) in &by_group {
        let sids: BTreeSet<u32> = ours
            .union(&theirs)
            .map(|a| a.1)
            .filter(|s| local_sid(*s) == (*g == "local rules"))
            .collect();
        println!("{g} | {both} | {suri} | {ew} | {}", sids.len());
    }
    let protocol: BTreeMap<u32, Protocol> =
        parsed.rules.iter().map(|r| (r.sid, r.protocol)).collect();
    let mut by_protocol: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    for (_, sid) in ours.union(&theirs) {
        if let Some(p) = protocol.get(sid) {
            by_protocol
                .entry(format!("{p:?}"))
                .or_default()
                .insert(*sid);
        }
    }
    let counts: Vec<String> = by_protocol
        .iter()
        .map(|(p, sids)| format!("{p} {}", sids.len()))
        .collect();
    println!("sids alerting by protocol: {}", counts.join(", "));
    let only_suricata: Vec<_> = theirs.difference(&ours).collect();
    let only_eastwall: Vec<_> = ours.difference(&theirs).collect();
    assert!(
        only_suricata.is_empty() && only_eastwall.is_empty(),
        "only Suricata (packet, sid): {only_suricata:?}\nonly eastwall: {only_eastwall:?}"
    );
    // The hand-written sessions make every local rule alert but the `noalert` one and the
    // TCP one.
    let fired: BTreeSet<u32> = ours.iter().map(|a| a.1).filter(|s| local_sid(*s)).collect();
    let silent: Vec<u32> = local
        .iter()
        .map(|r| r.sid)
        .filter(|s| !fired.contains(s))
        .collect();
    assert_eq!(silent, [9100015, 9100023], "local rules that never alerted");
    let _ = std::fs::remove_dir_all(&dir);
}
