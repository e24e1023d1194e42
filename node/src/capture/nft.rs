//! The nftables table the node owns, built as one JSON batch and applied atomically.
//!
//! ```text
//! table inet eastwall {
//!   chain prerouting {   # filter hook prerouting priority mangle
//!     meta l4proto tcp tcp flags & (syn | ack) != syn socket transparent 1 meta mark set MARK accept
//!                                          # packets of connections the node holds (not a new SYN)
//!     meta l4proto udp socket transparent 1 meta mark set MARK accept   # UDP sessions it holds
//!     fib daddr type local accept                                       # the host's own services
//!     iifname { WORKLOAD_IFACES } meta l4proto tcp fib saddr . iif oif missing
//!       limit rate 20/second add @spoofed4 { iifname . ip saddr . ip daddr . tcp dport }
//!     iifname { WORKLOAD_IFACES } meta l4proto tcp fib saddr . iif oif missing
//!       counter name spoofed drop           # spoofed source: always dropped and counted
//!     (and the same for ip6, and for udp)
//!     iifname { WORKLOAD_IFACES } meta l4proto tcp tproxy to :15001 meta mark set MARK accept
//!     iifname { WORKLOAD_IFACES } meta l4proto tcp drop                 # fail closed: no listener
//!     iif lo meta mark MARK meta l4proto tcp tproxy to :15001 accept    # (local traffic option)
//!     iif lo meta mark MARK meta l4proto tcp drop
//!     ip daddr @local4 meta l4proto tcp tproxy to :15006 meta mark set MARK accept   # inbound
//!     ip daddr @local4 meta l4proto tcp drop    (and the same for ip6 / @local6)
//!     (each capture rule and its drop again for `udp`, to the UDP listeners on the same ports)
//!     iifname { WORKLOAD_IFACES } meta l4proto != { tcp, udp }:          # every other protocol
//!       fib saddr . iif oif missing drop                                # spoofed source
//!       ct state established,related accept         # flows the node allowed, their ICMP errors
//!       icmpv6 type { nd-*, mld-* } accept                              # what IPv6 needs on a link
//!       meta mark set QUEUE_MARK_OUT accept   # a new flow: `capture::queue` queues it to the node
//!     ip daddr @local4 meta l4proto != { tcp, udp }: the same, marked QUEUE_MARK_IN
//!   }
//!   chain output {       # route hook output (local traffic option)
//!     meta mark OWN accept
//!     meta l4proto { tcp, udp } fib daddr type != local meta mark set MARK
//!   }
//! }
//! ```
//! A `tproxy` statement that finds no socket does not match, so the `drop` after it is what
//! keeps captured traffic from bypassing a stopped node.

use std::borrow::Cow;
use std::collections::HashSet;
use std::net::IpAddr;

use nftables::batch::Batch;
use nftables::expr::{
    BinaryOperation, Expression, Fib, FibFlag, FibResult, Meta, MetaKey, NamedExpression, Payload,
    PayloadField, SetItem, Socket, SocketAttr,
};
use nftables::schema::{
    Chain, NfListObject, Nftables, Rule, Set, SetFlag, SetType, SetTypeValue, Table,
};
use nftables::stmt::{Mangle, Match, Operator, Statement, TProxy};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use super::queue::{QUEUE_MARK_IN, QUEUE_MARK_OUT};
use crate::config::CaptureSpec;

/// How long a spoofing attempt stays in the set (one record per attempt and this period).
pub const SPOOF_MEMORY_SECS: u32 = 60;

/// Name of the counter of every packet dropped for a spoofed source.
pub const SPOOF_COUNTER: &str = "spoofed";

/// New spoofing attempts remembered (and so recorded) per second, at most: a flood of spoofed
/// packets costs the node a bounded number of records and set entries (every packet is still
/// dropped and counted).
pub const SPOOF_RECORDS_PER_SEC: u32 = 20;

/// Name of the set of recent spoofing attempts of one address family.
pub fn spoof_set(fam: Fam) -> &'static str {
    match fam {
        Fam::V4 => "spoofed4",
        Fam::V6 => "spoofed6",
    }
}

/// Priority of the `mangle` hooks.
const PRIO_MANGLE: i32 = -150;

/// Builds the batch that replaces the node's table with one capturing for `local_addrs`
/// (this host's workload addresses).
pub fn ruleset(spec: &CaptureSpec, local_addrs: &[IpAddr]) -> Nftables<'static> {
    let t: Cow<'static, str> = Cow::Owned(spec.table.clone());
    let mut b = Batch::new();
    // `add` then `delete` then `add` makes the replacement atomic and idempotent: the first
    // add ensures the table exists so the delete cannot fail.
    b.add(NfListObject::Table(table(&t)));
    b.delete(NfListObject::Table(table(&t)));
    b.add(NfListObject::Table(table(&t)));
    b.add(NfListObject::Chain(Chain {
        family: NfFamily::INet,
        table: t.clone(),
        name: "prerouting".into(),
        _type: Some(NfChainType::Filter),
        hook: Some(NfHook::Prerouting),
        prio: Some(PRIO_MANGLE),
        policy: Some(NfChainPolicy::Accept),
        ..Chain::default()
    }));
    for fam in [Fam::V4, Fam::V6] {
        let addr = if matches!(fam, Fam::V4) {
            SetType::Ipv4Addr
        } else {
            SetType::Ipv6Addr
        };
        b.add(NfListObject::Set(Box::new(Set {
            family: NfFamily::INet,
            table: t.clone(),
            name: spoof_set(fam).into(),
            set_type: SetTypeValue::Concatenated(
                vec![SetType::Ifname, addr, addr, SetType::InetService].into(),
            ),
            flags: Some(HashSet::from([SetFlag::Timeout])),
            timeout: Some(SPOOF_MEMORY_SECS),
            size: Some(65_536),
            ..Set::default()
        })));
    }
    b.add(NfListObject::Counter(nftables::schema::Counter {
        family: NfFamily::INet,
        table: t.clone(),
        name: SPOOF_COUNTER.into(),
        handle: None,
        packets: None,
        bytes: None,
    }));
    let mut pre: Vec<Vec<Statement<'static>>> = Vec::new();
    let tcp = || l4("tcp");
    let mark = spec.mark;
    // Packets of connections the node already holds (captured ones, and replies to its
    // spoofing sockets) go straight to their socket. Not a connection's first SYN: a
    // transparent socket in TIME_WAIT also matches `socket transparent`, and a new SYN with
    // its 4-tuple (the client reusing a port within 60 s) would then be answered by the
    // TIME_WAIT socket with an ACK instead of reaching `tproxy` (which retires the TIME_WAIT
    // socket and hands the SYN to the listener): the client resets it and sends its SYN
    // again (22% of new connections in one L7 benchmark run, docs/BENCHMARKS.md).
    pre.push(vec![
        tcp(),
        Statement::Match(Match {
            left: Expression::BinaryOperation(Box::new(BinaryOperation::AND(
                payload("tcp", "flags"),
                Expression::Number(TCP_SYN | TCP_ACK),
            ))),
            right: Expression::Number(TCP_SYN),
            op: Operator::NEQ,
        }),
        eq(
            Expression::Named(NamedExpression::Socket(Socket {
                key: Cow::Owned(SocketAttr::Transparent),
            })),
            Expression::Number(1),
        ),
        set_mark(mark),
        accept(),
    ]);
    // Datagrams of UDP sessions the node holds: a client's to its session's socket (bound
    // to the destination, connected to the client), a server's answers to the upstream one.
    pre.push(vec![
        l4("udp"),
        eq(
            Expression::Named(NamedExpression::Socket(Socket {
                key: Cow::Owned(SocketAttr::Transparent),
            })),
            Expression::Number(1),
        ),
        set_mark(mark),
        accept(),
    ]);
    pre.push(vec![
        eq(fib_daddr_type(), Expression::String("local".into())),
        accept(),
    ]);
    if !spec.interfaces.is_empty() {
        let ifaces = || {
            Expression::Named(NamedExpression::Set(
                spec.interfaces
                    .iter()
                    .map(|i| SetItem::Element(Expression::String(i.clone().into())))
                    .collect(),
            ))
        };
        // Anti-spoofing: a source address that the arriving interface does not lead back
        // to (strict reverse-path check) is remembered in a set the node reads to record it
        // (see `capture::spoof`), at most `SPOOF_RECORDS_PER_SEC` new attempts a second; then
        // counted and dropped by a rule of its own, so that the drop never depends on the
        // set (a full set fails the insertion, which ends only the first rule).
        for proto in ["tcp", "udp"] {
            for fam in [Fam::V4, Fam::V6] {
                let spoofed = || {
                    vec![
                        nfproto(fam),
                        eq(meta(MetaKey::Iifname), ifaces()),
                        l4(proto),
                        eq(fib_saddr_iif_oif(), Expression::Boolean(false)),
                    ]
                };
                let mut remember = spoofed();
                remember.extend([
                    Statement::Limit(nftables::stmt::Limit {
                        rate: SPOOF_RECORDS_PER_SEC,
                        rate_unit: None,
                        per: Some("second".into()),
                        burst: Some(2 * SPOOF_RECORDS_PER_SEC),
                        burst_unit: None,
                        inv: None,
                    }),
                    Statement::Set(nftables::stmt::Set {
                        op: nftables::stmt::SetOp::Add,
                        elem: Expression::Named(NamedExpression::Concat(vec![
                            meta(MetaKey::Iifname),
                            payload(fam.payload(), "saddr"),
                            payload(fam.payload(), "daddr"),
                            payload(proto, "dport"),
                        ])),
                        set: format!("@{}", spoof_set(fam)).into(),
                    }),
                ]);
                pre.push(remember);
                let mut dropped = spoofed();
                dropped.extend([count_spoofed(), drop()]);
                pre.push(dropped);
            }
        }
        for proto in ["tcp", "udp"] {
            for fam in [Fam::V4, Fam::V6] {
                pre.push(vec![
                    nfproto(fam),
                    eq(meta(MetaKey::Iifname), ifaces()),
                    l4(proto),
                    tproxy(fam, spec.outbound_port),
                    set_mark(mark),
                    accept(),
                ]);
            }
            pre.push(vec![
                eq(meta(MetaKey::Iifname), ifaces()),
                l4(proto),
                drop(),
            ]);
        }
        // Every other protocol: the node decides each new flow (marked here, queued by the
        // `capture::queue` chain); a queue without a reader drops, so a stopped node fails
        // closed here too.
        let from_workloads = || vec![eq(meta(MetaKey::Iifname), ifaces()), not_tcp_udp()];
        let mut spoofed = from_workloads();
        spoofed.extend([
            eq(fib_saddr_iif_oif(), Expression::Boolean(false)),
            count_spoofed(),
            drop(),
        ]);
        pre.push(spoofed);
        pre.extend(queue_new_flows(from_workloads, QUEUE_MARK_OUT));
    }
    if spec.local_traffic {
        for proto in ["tcp", "udp"] {
            let lo_marked = || {
                vec![
                    eq(meta(MetaKey::Iifname), Expression::String("lo".into())),
                    eq(meta(MetaKey::Mark), Expression::Number(mark)),
                    l4(proto),
                ]
            };
            for fam in [Fam::V4, Fam::V6] {
                let mut r = vec![nfproto(fam)];
                r.extend(lo_marked());
                r.extend([tproxy(fam, spec.outbound_port), accept()]);
                pre.push(r);
            }
            let mut r = lo_marked();
            r.push(drop());
            pre.push(r);
        }
    }
    if spec.inbound {
        for (fam, fam_addrs) in [
            (
                Fam::V4,
                local_addrs
                    .iter()
                    .filter(|a| a.is_ipv4())
                    .collect::<Vec<_>>(),
            ),
            (
                Fam::V6,
                local_addrs
                    .iter()
                    .filter(|a| a.is_ipv6())
                    .collect::<Vec<_>>(),
            ),
        ] {
            if fam_addrs.is_empty() {
                continue;
            }
            let daddr = || {
                eq(
                    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
                        PayloadField {
                            protocol: fam.payload().into(),
                            field: "daddr".into(),
                        },
                    ))),
                    Expression::Named(NamedExpression::Set(
                        fam_addrs
                            .iter()
                            .map(|a| SetItem::Element(Expression::String(a.to_string().into())))
                            .collect(),
                    )),
                )
            };
            for proto in ["tcp", "udp"] {
                pre.push(vec![
                    daddr(),
                    l4(proto),
                    tproxy(fam, spec.inbound_port),
                    set_mark(mark),
                    accept(),
                ]);
                pre.push(vec![daddr(), l4(proto), drop()]);
            }
            let to_workloads = || vec![daddr(), not_tcp_udp()];
            pre.extend(queue_new_flows(to_workloads, QUEUE_MARK_IN));
        }
    }
    for expr in pre {
        b.add(rule(&t, "prerouting", expr));
    }
    if spec.local_traffic {
        b.add(NfListObject::Chain(Chain {
            family: NfFamily::INet,
            table: t.clone(),
            name: "output".into(),
            _type: Some(NfChainType::Route),
            hook: Some(NfHook::Output),
            prio: Some(PRIO_MANGLE),
            policy: Some(NfChainPolicy::Accept),
            ..Chain::default()
        }));
        b.add(rule(
            &t,
            "output",
            vec![
                eq(meta(MetaKey::Mark), Expression::Number(spec.own_mark)),
                accept(),
            ],
        ));
        b.add(rule(
            &t,
            "output",
            vec![
                eq(
                    meta(MetaKey::L4proto),
                    Expression::Named(NamedExpression::Set(vec![
                        SetItem::Element(Expression::String("tcp".into())),
                        SetItem::Element(Expression::String("udp".into())),
                    ])),
                ),
                Statement::Match(Match {
                    left: fib_daddr_type(),
                    right: Expression::String("local".into()),
                    op: Operator::NEQ,
                }),
                set_mark(mark),
            ],
        ));
    }
    b.to_nftables()
}

/// The batch that removes the node's table.
pub fn teardown(table_name: &str) -> Nftables<'static> {
    let t: Cow<'static, str> = Cow::Owned(table_name.to_owned());
    let mut b = Batch::new();
    b.add(NfListObject::Table(table(&t)));
    b.delete(NfListObject::Table(table(&t)));
    b.to_nftables()
}

fn table(name: &str) -> Table<'static> {
    Table {
        family: NfFamily::INet,
        name: Cow::Owned(name.to_owned()),
        handle: None,
    }
}

fn rule(table: &str, chain: &'static str, expr: Vec<Statement<'static>>) -> NfListObject<'static> {
    NfListObject::Rule(Rule {
        family: NfFamily::INet,
        table: Cow::Owned(table.to_owned()),
        chain: chain.into(),
        expr: expr.into(),
        ..Rule::default()
    })
}

/// `meta l4proto != { tcp, udp }`: the protocols the node does not proxy.
fn not_tcp_udp() -> Statement<'static> {
    Statement::Match(Match {
        left: meta(MetaKey::L4proto),
        right: Expression::Named(NamedExpression::Set(vec![
            SetItem::Element(Expression::String("tcp".into())),
            SetItem::Element(Expression::String("udp".into())),
        ])),
        op: Operator::NEQ,
    })
}

/// The rules after `matching` for a protocol the node does not proxy: packets of flows it
/// allowed and their related ICMP errors pass, IPv6's own link traffic passes, and the
/// first packet of every new flow is marked `queue_mark`, for the queue chain
/// (`capture::queue`) to hand to the node for a decision.
fn queue_new_flows(
    matching: impl Fn() -> Vec<Statement<'static>>,
    queue_mark: u32,
) -> Vec<Vec<Statement<'static>>> {
    let with = |more: Vec<Statement<'static>>| {
        let mut r = matching();
        r.extend(more);
        r
    };
    let ct_state = Expression::Named(NamedExpression::CT(nftables::expr::CT {
        key: "state".into(),
        family: None,
        dir: None,
    }));
    let names = |list: &[&'static str]| {
        Expression::Named(NamedExpression::Set(
            list.iter()
                .map(|n| SetItem::Element(Expression::String((*n).into())))
                .collect(),
        ))
    };
    vec![
        with(vec![
            eq(ct_state, names(&["established", "related"])),
            accept(),
        ]),
        // Neighbour discovery and multicast listener reports: the link needs them.
        with(vec![
            eq(
                payload("icmpv6", "type"),
                names(&[
                    "nd-router-solicit",
                    "nd-neighbor-solicit",
                    "nd-neighbor-advert",
                    "mld-listener-query",
                    "mld-listener-report",
                    "mld-listener-done",
                    "mld2-listener-report",
                ]),
            ),
            accept(),
        ]),
        with(vec![set_mark(queue_mark), accept()]),
    ]
}

/// `meta l4proto PROTO`.
fn l4(proto: &'static str) -> Statement<'static> {
    eq(meta(MetaKey::L4proto), Expression::String(proto.into()))
}

fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

fn fib_daddr_type() -> Expression<'static> {
    Expression::Named(NamedExpression::Fib(Fib {
        result: FibResult::Type,
        flags: HashSet::from([FibFlag::Daddr]),
    }))
}

/// `fib saddr . iif oif`: the interface the source address routes back through, if it is
/// the one the packet came in on (`missing`, i.e. false, otherwise).
fn fib_saddr_iif_oif() -> Expression<'static> {
    Expression::Named(NamedExpression::Fib(Fib {
        result: FibResult::Oif,
        flags: HashSet::from([FibFlag::Saddr, FibFlag::Iif]),
    }))
}

/// TCP header flag bits.
const TCP_SYN: u32 = 0x02;
const TCP_ACK: u32 = 0x10;

fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.into(),
            field: field.into(),
        },
    )))
}

fn eq(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left,
        right,
        op: Operator::EQ,
    })
}

fn set_mark(mark: u32) -> Statement<'static> {
    Statement::Mangle(Mangle {
        key: meta(MetaKey::Mark),
        value: Expression::Number(mark),
    })
}

/// An address family, as nft spells it in its different places.
#[derive(Clone, Copy, Debug)]
pub enum Fam {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Fam {
    fn payload(self) -> &'static str {
        match self {
            Fam::V4 => "ip",
            Fam::V6 => "ip6",
        }
    }
    fn nfproto(self) -> &'static str {
        match self {
            Fam::V4 => "ipv4",
            Fam::V6 => "ipv6",
        }
    }
}

fn nfproto(fam: Fam) -> Statement<'static> {
    eq(
        meta(MetaKey::Nfproto),
        Expression::String(fam.nfproto().into()),
    )
}

/// In an `inet` table, `tproxy` must name its family.
fn tproxy(fam: Fam, port: u16) -> Statement<'static> {
    Statement::TProxy(TProxy {
        family: Some(fam.payload().into()),
        port,
        addr: None,
    })
}

/// Counts a packet in the [`SPOOF_COUNTER`].
fn count_spoofed() -> Statement<'static> {
    Statement::Counter(nftables::stmt::Counter::Named(SPOOF_COUNTER.into()))
}

fn accept() -> Statement<'static> {
    Statement::Accept(None)
}

fn drop() -> Statement<'static> {
    Statement::Drop(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> CaptureSpec {
        CaptureSpec {
            interfaces: vec!["wl-a".into(), "veth*".into()],
            local_traffic: true,
            ..CaptureSpec::default()
        }
    }

    #[test]
    fn one_batch_replaces_the_table() {
        let n = ruleset(
            &spec(),
            &["10.1.0.2".parse().unwrap(), "fd00::2".parse().unwrap()],
        );
        let json = serde_json::to_value(&n).unwrap();
        let objs = json["nftables"].as_array().unwrap();
        // metainfo? no: add table, delete table, add table, then chains and rules
        assert!(objs[0]["add"]["table"].is_object());
        assert!(objs[1]["delete"]["table"].is_object());
        let rules: Vec<_> = objs
            .iter()
            .filter(|o| o["add"]["rule"].is_object())
            .collect();
        // transparent (tcp, udp), local, then for tcp and udp each: spoofed record x2 and
        // spoofed drop x2, iface
        // tproxy x2 + drop, lo tproxy x2 + drop, v4 tproxy+drop, v6 tproxy+drop; other
        // protocols: spoofed drop and 3 queue rules from workloads, 3 to each family's
        // workloads; output x2
        assert_eq!(rules.len(), 43, "{json:#}");
        let text = json.to_string();
        assert!(
            text.contains("\"tproxy\":{\"family\":\"ip\",\"port\":15001}"),
            "{text}"
        );
        assert!(
            text.contains("\"tproxy\":{\"family\":\"ip6\",\"port\":15001}"),
            "{text}"
        );
        assert!(
            text.contains("\"tproxy\":{\"family\":\"ip\",\"port\":15006}"),
            "{text}"
        );
        assert!(text.contains("\"veth*\""));
        assert!(text.contains("fd00::2"));
        // UDP is captured like TCP, to the UDP listeners on the same ports.
        let udp_tproxy = rules
            .iter()
            .filter(|r| {
                let r = r.to_string();
                r.contains("\"udp\"") && r.contains("tproxy")
            })
            .count();
        assert_eq!(udp_tproxy, 6, "{json:#}");
        // Other protocols' new flows are marked for the two queues.
        for mark in [QUEUE_MARK_OUT, QUEUE_MARK_IN] {
            let marked = format!(
                "\"mangle\":{{\"key\":{{\"meta\":{{\"key\":\"mark\"}}}},\"value\":{mark}}}"
            );
            assert!(text.contains(&marked), "{marked} in {text}");
        }
    }

    #[test]
    fn a_spoofed_source_is_dropped_whatever_happens_to_its_record() {
        let n = ruleset(&spec(), &["10.1.0.2".parse().unwrap()]);
        let json = serde_json::to_value(&n).unwrap();
        let rules: Vec<Vec<serde_json::Value>> = json["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o["add"]["rule"]["expr"].as_array().cloned())
            .collect();
        let is_match = |s: &serde_json::Value| s.get("match").is_some();
        let mut recorders = 0;
        for (i, r) in rules.iter().enumerate() {
            if !r.iter().any(|s| s.get("set").is_some()) {
                continue;
            }
            recorders += 1;
            // The recording rule is rate-limited and never drops: a full set (a failed
            // insertion) ends only this rule.
            assert!(r.iter().any(|s| s.get("limit").is_some()), "{r:?}");
            assert!(!r.iter().any(|s| s.get("drop").is_some()), "{r:?}");
            // The next rule has the same matches, counts and drops.
            let next = &rules[i + 1];
            // (fib flags are a set: their order in the JSON is not fixed.)
            let matches = |r: &Vec<serde_json::Value>| {
                r.iter()
                    .filter(|s| is_match(s))
                    .map(|s| {
                        let mut s = s.clone();
                        if let Some(f) = s["match"]["left"]["fib"]["flags"].as_array_mut() {
                            f.sort_by_key(|v| v.to_string());
                        }
                        s
                    })
                    .collect::<Vec<_>>()
            };
            assert_eq!(matches(r), matches(next));
            assert!(
                next.iter().any(|s| s["counter"] == SPOOF_COUNTER),
                "{next:?}"
            );
            assert!(next.iter().any(|s| s.get("drop").is_some()), "{next:?}");
        }
        assert_eq!(recorders, 4, "tcp and udp, IPv4 and IPv6");
        let counters = json["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["add"]["counter"]["name"] == SPOOF_COUNTER)
            .count();
        assert_eq!(counters, 1);
    }

    #[test]
    fn every_tproxy_is_followed_by_a_drop_for_the_same_match() {
        let n = ruleset(&spec(), &["10.1.0.2".parse().unwrap()]);
        let json = serde_json::to_value(&n).unwrap();
        let rules: Vec<_> = json["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o["add"]["rule"]["expr"].as_array().cloned())
            .collect();
        // Matches other than the address-family one.
        let matches = |r: &Vec<serde_json::Value>| {
            r.iter()
                .filter(|s| {
                    s.get("match").is_some() && s["match"]["left"]["meta"]["key"] != "nfproto"
                })
                .cloned()
                .collect::<Vec<_>>()
        };
        let mut tproxies = 0;
        for (i, r) in rules.iter().enumerate() {
            if r.iter().any(|s| s.get("tproxy").is_some()) {
                tproxies += 1;
                // The next rule that is not another family's tproxy for the same match drops.
                let next = rules[i + 1..]
                    .iter()
                    .find(|n| !n.iter().any(|s| s.get("tproxy").is_some()))
                    .unwrap();
                assert!(
                    next.last().unwrap().get("drop").is_some(),
                    "rule after tproxy must drop: {next:?}"
                );
                // The drop is at least as broad as the tproxy rule it backs.
                let (tp, dr) = (matches(r), matches(next));
                assert!(
                    dr.iter().all(|m| tp.contains(m)),
                    "{dr:?} not within {tp:?}"
                );
            }
        }
        assert_eq!(tproxies, 10);
    }
}
