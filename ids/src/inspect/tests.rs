use super::*;
use crate::class::Classifications;
use crate::compile::{Limits, RuleMask, Selection};
use crate::http::HttpVersion;
use crate::rule::parse_rules;
use crate::vars::Vars;
use eastwall_wire::sniff::ClientHello;

fn engine_with(rules: &str, vars: &Vars, limits: Limits) -> Arc<Engine> {
    let p = parse_rules("t.rules", rules);
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    assert!(p.skipped.is_empty(), "{:?}", p.skipped);
    let (e, report) = Engine::build_with_limits(
        &p.rules,
        vars,
        &Classifications::suricata_defaults(),
        &Selection::all(),
        limits,
    );
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    Arc::new(e)
}

fn engine(rules: &str) -> Arc<Engine> {
    engine_with(rules, &Vars::east_west(), Limits::default())
}

fn flow() -> FlowMeta {
    FlowMeta {
        src: "10.0.0.1:40000".parse().unwrap(),
        dst: "10.0.0.2:80".parse().unwrap(),
    }
}

fn t(s: u64) -> Timestamp {
    Timestamp::from_secs(1_700_000_000 + s)
}

fn sids(v: &Verdict) -> Vec<u32> {
    v.alerts.iter().map(|a| a.sid).collect()
}

fn get<'a>(path: &'a str, headers: &'a [(&'a str, &'a [u8])]) -> HttpRequest<'a> {
    HttpRequest {
        method: "GET",
        uri_raw: path.as_bytes(),
        host: None,
        headers,
        version: HttpVersion::Http11,
        raw_head: None,
    }
}

#[test]
fn stream_rule_alerts_once_per_direction() {
    let e = engine(
        r#"alert tcp any any -> any any (msg:"evil"; content:"evil"; classtype:trojan-activity; sid:1; rev:2;)"#,
    );
    let mut fi = FlowInspector::new(e, flow());
    let v = fi.stream(Dir::ToServer, b"an evil thing", t(0));
    assert_eq!(sids(&v), [1]);
    let a = &v.alerts[0];
    assert_eq!((a.dir, a.rev, a.severity), (Dir::ToServer, 2, 1));
    assert_eq!(a.category, "A Network Trojan was detected");
    assert!(!v.blocks());
    // Same direction, later message: no second alert. The other direction: alerts.
    assert!(fi.stream(Dir::ToClient, b"ok", t(1)).is_empty());
    assert!(fi.stream(Dir::ToServer, b"evil again", t(2)).is_empty());
    assert_eq!(sids(&fi.stream(Dir::ToClient, b"evil reply", t(3))), [1]);
}

#[test]
fn patterns_across_chunks_and_offsets_per_message() {
    let e = engine(concat!(
        "alert tcp any any -> any any (msg:\"a\"; content:\"attack\"; sid:1;)\n",
        "alert tcp any any -> any any (msg:\"b\"; content:\"PING\"; depth:4; sid:2;)\n",
    ));
    let mut fi = FlowInspector::new(e, flow());
    assert!(fi.stream(Dir::ToServer, b"xx att", t(0)).is_empty());
    assert_eq!(sids(&fi.stream(Dir::ToServer, b"ack", t(0))), [1]);
    // depth counts from the start of each message: the second client message starts with PING.
    assert!(fi.stream(Dir::ToClient, b"hello", t(0)).is_empty());
    assert_eq!(sids(&fi.stream(Dir::ToServer, b"PING", t(0))), [2]);
}

#[test]
fn negation_is_decided_at_message_end() {
    let e = engine(
        r#"alert tcp any any -> any any (msg:"n"; content:"user"; content:!"pass"; distance:0; sid:1;)"#,
    );
    let mut fi = FlowInspector::new(e.clone(), flow());
    assert!(fi.stream(Dir::ToServer, b"user x", t(0)).is_empty());
    assert!(fi.stream(Dir::ToServer, b" pass", t(0)).is_empty());
    assert!(fi.stream(Dir::ToClient, b"ok", t(0)).is_empty());
    let mut fi = FlowInspector::new(e, flow());
    assert!(fi.stream(Dir::ToServer, b"user x", t(0)).is_empty());
    assert_eq!(sids(&fi.stream(Dir::ToClient, b"ok", t(0))), [1]);
}

#[test]
fn dsize_is_the_message_size() {
    let e =
        engine(r#"alert tcp any any -> any any (msg:"d"; dsize:4; content:"AB"; depth:2; sid:1;)"#);
    let mut fi = FlowInspector::new(e.clone(), flow());
    fi.stream(Dir::ToServer, b"AB", t(0));
    fi.stream(Dir::ToServer, b"CD", t(0));
    assert_eq!(sids(&fi.stream_end(Dir::ToServer, t(0))), [1]);
    let mut fi = FlowInspector::new(e, flow());
    fi.stream(Dir::ToServer, b"ABCDE", t(0));
    assert!(fi.close(t(0)).is_empty());
}

#[test]
fn http_transactions() {
    let e = engine(concat!(
        "alert http any any -> any any (msg:\"uri\"; flow:established,to_server; http.method; content:\"GET\"; http.uri; content:\"/etc/passwd\"; endswith; sid:1;)\n",
        "alert http any any -> any any (msg:\"resp\"; flow:established,to_client; http.stat_code; content:\"200\"; http.header; content:\"Server|3a 20|nginx\"; sid:2;)\n",
        "alert http any any -> any any (msg:\"ua\"; flow:to_server; http.user_agent; content:\"sqlmap\"; nocase; sid:3;)\n",
        "drop http any any -> any any (msg:\"hdr\"; flow:to_server; http.header; content:\"X-Evil|3a 20|1\"; sid:4;)\n",
    ));
    let mut fi = FlowInspector::new(e, flow());
    fi.set_app_proto(AppProto::Http1);
    let h: &[(&str, &[u8])] = &[
        ("host", b"a"),
        ("user-agent", b"SQLMap/1.0"),
        ("x-evil", b"1"),
    ];
    let v = fi.http_request(&get("/x/../etc/./passwd", h), t(0));
    assert_eq!(sids(&v), [4, 1, 3]);
    assert!(v.blocks());
    assert_eq!(v.alerts[1].tx_id, Some(0));
    assert_eq!(v.alerts[1].http.as_ref().unwrap().url, "/x/../etc/./passwd");
    // Next transaction: /admin then a 200 response.
    let v = fi.http_request(&get("/admin", &[]), t(1));
    assert!(v.is_empty());
    let ok = HttpResponse {
        status: 200,
        reason: "OK",
        headers: &[("server", b"nginx/1.24")],
        version: HttpVersion::Http11,
        raw_head: None,
    };
    let v = fi.http_response(&ok, t(1));
    assert_eq!(sids(&v), [2]);
    assert_eq!(
        (v.alerts[0].dir, v.alerts[0].tx_id),
        (Dir::ToClient, Some(1))
    );
    assert_eq!(v.alerts[0].http.as_ref().unwrap().status, Some(200));
    // Once per transaction.
    assert!(fi.http_response(&ok, t(1)).is_empty());
}

#[test]
fn http_bodies() {
    let e = engine(concat!(
        "alert http any any -> any any (msg:\"b\"; flow:to_server; http.method; content:\"POST\"; http.request_body; content:\"cmd=\"; content:\"whoami\"; distance:0; sid:1;)\n",
        "alert http any any -> any any (msg:\"nb\"; flow:to_server; http.request_body; content:\"a=\"; content:!\"token\"; sid:2;)\n",
        "alert http any any -> any any (msg:\"fd\"; flow:to_client; file.data; content:\"<script>evil\"; sid:3;)\n",
    ));
    let mut fi = FlowInspector::new(e, flow());
    fi.set_app_proto(AppProto::Http1);
    let post = HttpRequest {
        method: "POST",
        ..get("/run", &[])
    };
    assert!(fi.http_request(&post, t(0)).is_empty());
    assert!(fi.http_request_body(b"a=1&cmd=who", false, t(0)).is_empty());
    assert_eq!(sids(&fi.http_request_body(b"ami", false, t(0))), [1]);
    // The negated rule waits for the end of the body.
    assert_eq!(sids(&fi.http_request_body(b"", true, t(0))), [2]);
    let ok = HttpResponse {
        status: 200,
        reason: "OK",
        headers: &[],
        version: HttpVersion::Http11,
        raw_head: None,
    };
    assert!(fi.http_response(&ok, t(0)).is_empty());
    assert_eq!(
        sids(&fi.http_response_body(b"<html><script>evil()", false, t(0))),
        [3]
    );
}

#[test]
fn rules_decided_late_need_what_their_heads_met() {
    let e = engine(concat!(
        "alert http any any -> any any (msg:\"a\"; flow:to_server; http.method; content:\"POST\"; http.request_body; content:\"cmd=whoami\"; sid:1;)\n",
        "alert http any any -> any any (msg:\"b\"; flow:to_server; http.method; content:\"POST\"; http.request_body; content:\"cmd=id%3b\"; sid:2;)\n",
        "alert http any any -> any any (msg:\"c\"; flow:to_client; http.stat_code; content:\"200\"; file.data; content:\"<script>evil\"; sid:3;)\n",
        "alert http any any -> any any (msg:\"d\"; flow:to_client; http.stat_code; content:\"500\"; http.server; content:\"nginx\"; file.data; content:\"stack trace of\"; sid:4;)\n",
        "alert http any any -> any any (msg:\"e\"; flow:to_server; flowbits:isset,seen; http.method; content:\"POST\"; http.request_body; content:\"cmd=whoami\"; sid:5;)\n",
        "alert http any any -> any any (msg:\"f\"; flow:to_server; http.uri; content:\"/run\"; http.request_body; content:\"x\"; sid:6;)\n",
    ));
    // The heads before the longest pattern become conditions, shared by rules that test
    // them alike: POST (1, 2), 200 (3), 500 from nginx (4). Rule 5 tests a flowbit (its
    // time matters), rule 6's best pattern is in its first phase: both as before.
    assert_eq!(e.conditions.len(), 3);
    let conds = |sid: u32| {
        let r = e.rules.iter().find(|r| r.info.sid == sid).unwrap();
        (r.first_phase(), r.conditions.len())
    };
    assert_eq!(conds(1), (Phase::RequestBody, 1));
    assert_eq!(conds(2), (Phase::RequestBody, 1));
    assert_eq!(conds(3), (Phase::ResponseBody, 1));
    assert_eq!(conds(4), (Phase::ResponseBody, 1));
    assert_eq!(conds(5), (Phase::Request, 0));
    assert_eq!(conds(6), (Phase::Request, 0));
    let mut fi = FlowInspector::new(e, flow());
    fi.set_app_proto(AppProto::Http1);
    let request = |fi: &mut FlowInspector, method: &'static str, path: &'static str| {
        let req = HttpRequest {
            method,
            ..get(path, &[])
        };
        fi.http_request(&req, t(0))
    };
    let response = |fi: &mut FlowInspector, status: u16, server: &[u8], body: &[u8]| {
        let resp = HttpResponse {
            status,
            reason: "R",
            headers: &[("server", server)],
            version: HttpVersion::Http11,
            raw_head: None,
        };
        let mut v = fi.http_response(&resp, t(0));
        v.alerts
            .extend(fi.http_response_body(body, true, t(0)).alerts);
        v
    };
    // The body's pattern alone does not make the rule fire: its method must have been POST.
    assert!(request(&mut fi, "GET", "/run").is_empty());
    assert!(fi.http_request_body(b"cmd=whoami", true, t(0)).is_empty());
    assert!(request(&mut fi, "POST", "/run").is_empty());
    assert_eq!(sids(&fi.http_request_body(b"cmd=whoami", true, t(0))), [1]);
    // Each transaction keeps its own: a POST earlier on the flow does not count.
    assert!(request(&mut fi, "PUT", "/run").is_empty());
    assert!(fi.http_request_body(b"cmd=id%3b", true, t(0)).is_empty());
    assert!(request(&mut fi, "POST", "/run").is_empty());
    assert_eq!(sids(&fi.http_request_body(b"cmd=id%3b", true, t(0))), [2]);
    // Response conditions, one of two buffers.
    assert!(request(&mut fi, "GET", "/").is_empty());
    assert!(response(&mut fi, 404, b"nginx", b"<script>evil").is_empty());
    assert!(request(&mut fi, "GET", "/").is_empty());
    assert_eq!(
        sids(&response(&mut fi, 200, b"nginx", b"<script>evil")),
        [3]
    );
    assert!(request(&mut fi, "GET", "/").is_empty());
    assert!(response(&mut fi, 200, b"nginx", b"stack trace of").is_empty());
    assert!(request(&mut fi, "GET", "/").is_empty());
    assert!(response(&mut fi, 500, b"apache", b"stack trace of").is_empty());
    assert!(request(&mut fi, "GET", "/").is_empty());
    assert_eq!(
        sids(&response(&mut fi, 500, b"nginx", b"stack trace of")),
        [4]
    );
}

#[test]
fn flowint_counts_per_flow_and_tests_when_its_buffer_is_complete() {
    let e = engine(concat!(
        // ET Open's idiom: count requests of a kind on the flow.
        "alert http any any -> any any (msg:\"dll\"; flow:to_server; http.uri; content:\".dll\"; flowint:dlls,+,1; noalert; sid:11;)\n",
        "alert http any any -> any any (msg:\"many\"; flow:to_server; flowint:dlls,>=,3; http.uri; content:\".dll\"; sid:2;)\n",
        "alert http any any -> any any (msg:\"first\"; flow:to_server; flowint:dlls,==,1; http.uri; content:\".dll\"; sid:3;)\n",
        // Another integer as the operand, `-` on one not set (nothing), `notset`.
        "alert tcp any any -> any any (msg:\"lim\"; content:\"LIMIT\"; flowint:limit,=,3; noalert; sid:4;)\n",
        "alert tcp any any -> any any (msg:\"tot\"; content:\"TOTAL\"; flowint:total,=,3; noalert; sid:9;)\n",
        "alert tcp any any -> any any (msg:\"cmp\"; content:\"CMP\"; flowint:total,>,limit; sid:8;)\n",
        "alert tcp any any -> any any (msg:\"sub\"; content:\"UNDO\"; flowint:undone,-,1; sid:6;)\n",
        "alert tcp any any -> any any (msg:\"never\"; content:\"CHECK\"; flowint:undone,notset; sid:7;)\n",
    ));
    let mut fi = FlowInspector::new(e.clone(), flow());
    fi.set_app_proto(AppProto::Http1);
    // The counting rule is ordered before the tests of its integer (whatever the sids): the
    // first request counts 1 and is seen as the first by rule 3.
    assert_eq!(sids(&fi.http_request(&get("/a.dll", &[]), t(0))), [3]);
    assert!(fi.http_request(&get("/index.html", &[]), t(1)).is_empty());
    assert!(fi.http_request(&get("/b.dll", &[]), t(2)).is_empty());
    assert_eq!(sids(&fi.http_request(&get("/c.dll", &[]), t(3))), [2]);
    assert_eq!(sids(&fi.http_request(&get("/d.dll", &[]), t(4))), [2]);
    // Per flow: a new flow starts without the integer.
    let mut other = FlowInspector::new(e.clone(), flow());
    other.set_app_proto(AppProto::Http1);
    assert_eq!(sids(&other.http_request(&get("/a.dll", &[]), t(5))), [3]);

    // Each message is the client's, answered by the server (which ends it: a test of an
    // integer is decided when its message is complete).
    let stream = |msgs: &[&[u8]]| {
        let mut fi = FlowInspector::new(e.clone(), flow());
        let mut alerts = Vec::new();
        for m in msgs {
            alerts.extend(sids(&fi.stream(Dir::ToServer, m, t(0))));
            alerts.extend(sids(&fi.stream(Dir::ToClient, b"ok", t(0))));
        }
        alerts
    };
    // A comparison of an integer not set is false.
    assert!(stream(&[b"CMP"]).is_empty());
    // 3 > `limit`, not set: 0.
    assert_eq!(stream(&[b"TOTAL", b"CMP"]), [8]);
    // Set in the same message before the test (the setter is ordered first): 3 > 0.
    assert_eq!(stream(&[b"CMP TOTAL"]), [8]);
    // 3 > 3 is false.
    assert!(stream(&[b"LIMIT", b"TOTAL CMP"]).is_empty());
    // `-` on an integer not set leaves it not set, so `notset` still holds.
    assert_eq!(stream(&[b"UNDO CHECK"]), [6, 7]);
}

#[test]
fn payload_in_http_rule_is_the_message_head() {
    let e = engine(
        r#"alert http any any -> any any (msg:"lfi"; flow:to_server; content:"../"; depth:200; http.uri; content:"file="; sid:1;)"#,
    );
    let mut fi = FlowInspector::new(e, flow());
    fi.set_app_proto(AppProto::Http1);
    assert_eq!(
        sids(&fi.http_request(&get("/v.php?file=../../x", &[]), t(0))),
        [1]
    );
    assert!(fi.http_request(&get("/v.php?file=x", &[]), t(0)).is_empty());
}

#[test]
fn flowbits_across_directions() {
    let e = engine(concat!(
        "alert tcp any any -> any any (msg:\"set\"; flow:to_server; content:\"LOGIN\"; flowbits:set,login; flowbits:noalert; sid:1;)\n",
        "alert tcp any any -> any any (msg:\"chk\"; flow:to_client; content:\"OK\"; flowbits:isset,login; sid:2;)\n",
        "alert tcp any any -> any any (msg:\"not\"; flow:to_client; content:\"OK\"; flowbits:isnotset,login; sid:3;)\n",
    ));
    let mut fi = FlowInspector::new(e.clone(), flow());
    assert!(fi.stream(Dir::ToServer, b"LOGIN bob", t(0)).is_empty());
    assert_eq!(sids(&fi.stream(Dir::ToClient, b"OK", t(0))), [2]);
    assert!(fi.close(t(0)).is_empty());
    let mut fi = FlowInspector::new(e, flow());
    fi.stream(Dir::ToServer, b"HELLO", t(0));
    let mut got = sids(&fi.stream(Dir::ToClient, b"OK", t(0)));
    got.extend(sids(&fi.close(t(0))));
    assert_eq!(got, [3]);
}

#[test]
fn pass_stops_inspection() {
    let e = engine(concat!(
        "pass tcp any any -> any any (msg:\"trusted\"; content:\"TRUSTED\"; sid:1;)\n",
        "alert tcp any any -> any any (msg:\"evil\"; content:\"evil\"; sid:2;)\n",
    ));
    let mut fi = FlowInspector::new(e, flow());
    let v = fi.stream(Dir::ToServer, b"TRUSTED evil", t(0));
    assert_eq!(sids(&v), [1]);
    assert_eq!(v.alerts[0].action, RuleAction::Pass);
    assert!(!v.blocks());
    assert!(fi.is_passed());
    assert!(fi.stream(Dir::ToClient, b"evil", t(0)).is_empty());
}

#[test]
fn thresholds_span_flows() {
    let e = engine(
        r#"alert tcp any any -> any any (msg:"scan"; content:"probe"; threshold:type limit, track by_src, count 2, seconds 60; sid:1;)"#,
    );
    let mut n = 0;
    for i in 0..5 {
        let mut fi = FlowInspector::new(e.clone(), flow());
        n += fi.stream(Dir::ToServer, b"probe", t(i)).alerts.len();
    }
    assert_eq!(n, 2);
}

#[test]
fn tls_and_dns() {
    let e = engine(concat!(
        "alert tls any any -> any any (msg:\"sni\"; tls.sni; dotprefix; content:\".evil.example\"; endswith; sid:1;)\n",
        "alert dns any any -> any any (msg:\"q\"; dns.query; content:\"bad.test\"; nocase; sid:2;)\n",
    ));
    let mut fi = FlowInspector::new(e.clone(), flow());
    fi.set_app_proto(AppProto::Tls);
    let v = fi.tls_client_hello(Some(&hello("c2.evil.example")), t(0));
    assert_eq!(sids(&v), [1]);
    assert_eq!(v.alerts[0].tls_sni.as_deref(), Some("c2.evil.example"));
    let mut fi = FlowInspector::new(e.clone(), flow());
    fi.set_app_proto(AppProto::Tls);
    assert_eq!(
        sids(&fi.tls_client_hello(Some(&hello("evil.example")), t(0))),
        [1]
    );
    let mut fi = FlowInspector::new(e.clone(), flow());
    fi.set_app_proto(AppProto::Tls);
    assert!(
        fi.tls_client_hello(Some(&hello("notevil.example")), t(0))
            .is_empty()
    );

    let mut fi = FlowInspector::new(e, flow());
    fi.set_app_proto(AppProto::Dns);
    let mut msg = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3];
    msg.extend_from_slice(b"BAD\x04test\x00\x00\x01\x00\x01");
    let mut framed = (msg.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&msg);
    let mut got = Vec::new();
    for b in &framed {
        got.extend(
            fi.stream(Dir::ToServer, std::slice::from_ref(b), t(0))
                .alerts,
        );
    }
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].dns_query.as_deref(), Some("BAD.test"));
    assert_eq!(got[0].tx_id, Some(0));
}

#[test]
fn header_addresses_and_ports() {
    let mut vars = Vars::suricata_defaults();
    vars.set("HOME_NET", "[10.0.0.2]").unwrap();
    let e = engine_with(
        r#"alert tcp $EXTERNAL_NET any -> $HOME_NET $HTTP_PORTS (msg:"in"; content:"x"; sid:1;)"#,
        &vars,
        Limits::default(),
    );
    // 10.0.0.1 is not external under this HOME_NET... it is (HOME_NET is only .2).
    let mut fi = FlowInspector::new(e.clone(), flow());
    assert_eq!(sids(&fi.stream(Dir::ToServer, b"x", t(0))), [1]);
    // Wrong orientation: data from the server does not match `-> $HOME_NET 80`.
    assert!(fi.stream(Dir::ToClient, b"x", t(0)).is_empty());
    let other = FlowMeta {
        src: "10.0.0.1:40000".parse().unwrap(),
        dst: "10.0.0.2:8080".parse().unwrap(),
    };
    let mut fi = FlowInspector::new(e, other);
    assert!(fi.stream(Dir::ToServer, b"x", t(0)).is_empty());
}

#[test]
fn long_messages_use_windows_and_depth() {
    let limits = Limits {
        stream_window: 1024,
        stream_overlap: 64,
        stream_depth: 4096,
        ..Limits::default()
    };
    let e = engine_with(
        concat!(
            "alert tcp any any -> any any (msg:\"deep\"; content:\"NEEDLE\"; sid:1;)\n",
            "alert tcp any any -> any any (msg:\"start\"; content:\"NEEDLE\"; depth:6; sid:2;)\n",
        ),
        &Vars::east_west(),
        limits,
    );
    // Across a window boundary, and not at the message start.
    let mut data = vec![b'.'; 1021];
    data.extend_from_slice(b"NEEDLE");
    let mut fi = FlowInspector::new(e.clone(), flow());
    assert_eq!(sids(&fi.stream(Dir::ToServer, &data, t(0))), [1]);
    // Beyond the depth: not inspected.
    let mut data = vec![b'.'; 5000];
    data.extend_from_slice(b"NEEDLE");
    let mut fi = FlowInspector::new(e, flow());
    assert!(fi.stream(Dir::ToServer, &data, t(0)).is_empty());
    assert!(fi.close(t(0)).is_empty());
}

#[test]
fn idle_inspector_is_small_and_quiet_verdicts_do_not_allocate() {
    let size = std::mem::size_of::<FlowInspector>();
    assert!(size <= 448, "FlowInspector is {size} bytes");
    let e = engine(r#"alert tcp any any -> any any (msg:"x"; content:"zzz"; sid:1;)"#);
    let mut fi = FlowInspector::new(e, flow());
    let v = fi.stream(Dir::ToServer, b"GET / HTTP/1.1\r\n\r\n", t(0));
    assert_eq!(v.alerts.capacity(), 0);
    let v = fi.stream(Dir::ToClient, b"HTTP/1.1 200 OK\r\n\r\n", t(0));
    assert_eq!(v.alerts.capacity(), 0);
    // After the message ends, its buffers are released but for the direction's tail: the
    // 2 bytes a 3-byte pattern needs before the next message's first byte.
    let ds = &fi.dirs[0];
    assert_eq!(
        (ds.window.as_slice(), ds.window.capacity()),
        (&b"\r\n"[..], 2)
    );
    assert!(ds.candidates.capacity() == 0 && ds.matched.capacity() == 0);
    // FIN: nothing more comes in that direction, so the tail goes too.
    fi.stream_end(Dir::ToServer, t(0));
    assert_eq!(fi.dirs[0].window.capacity(), 0);
    assert!(fi.close(t(0)).is_empty());
    assert_eq!(fi.dirs[1].window.capacity(), 0);
}

/// An interactive session where the server echoes every chunk: each chunk is its own
/// message, and the pattern is only ever whole across messages of one direction.
#[test]
fn echoed_chunks_do_not_evade_patterns() {
    let e = engine(
        r#"drop tcp any any -> any any (msg:"evil"; flow:to_server; content:"EVIL-PAYLOAD"; sid:1;)"#,
    );
    let data = b"hello EVIL-PAYLOAD bye";
    // `EVIL-PAYLOAD` is bytes 6..18: its last byte, 17, is in chunk 17 / size.
    for size in 1..=6 {
        let mut fi = FlowInspector::new(e.clone(), flow());
        let mut blocked_at = None;
        for (i, chunk) in data.chunks(size).enumerate() {
            let v = fi.stream(Dir::ToServer, chunk, t(0));
            if v.blocks() {
                assert_eq!(sids(&v), [1]);
                blocked_at = Some(i);
                break;
            }
            assert!(fi.stream(Dir::ToClient, chunk, t(0)).is_empty());
        }
        // The verdict on the chunk that completes the pattern blocks it, so the node never
        // forwards it.
        assert_eq!(blocked_at, Some(17 / size), "chunks of {size}");
    }
}

#[test]
fn patterns_across_messages_alert_once_and_old_bytes_do_not_match_again() {
    let e = engine(concat!(
        "alert tcp any any -> any any (msg:\"evil\"; content:\"EVIL\"; sid:1;)\n",
        "alert tcp any any -> any any (msg:\"chain\"; content:\"USER \"; content:\"root\"; distance:0; within:8; sid:2;)\n",
        "alert tcp any any -> any any (msg:\"flip\"; flow:to_server; pcre:\"/fli+p/\"; flowbits:toggle,t; flowbits:noalert; sid:3;)\n",
        "alert tcp any any -> any any (msg:\"state\"; flow:to_client; content:\"state\"; flowbits:isset,t; sid:4;)\n",
    ));
    let mut fi = FlowInspector::new(e.clone(), flow());
    let mut got = Vec::new();
    for (dir, data) in [
        (Dir::ToServer, &b"EV"[..]),
        (Dir::ToClient, b"."),
        (Dir::ToServer, b"IL US"),
        (Dir::ToClient, b"."),
        (Dir::ToServer, b"ER r"),
        (Dir::ToClient, b"."),
        (Dir::ToServer, b"oot EVIL"),
        (Dir::ToClient, b"EVIL"),
    ] {
        got.extend(
            sids(&fi.stream(dir, data, t(0)))
                .into_iter()
                .map(|s| (s, dir)),
        );
    }
    got.extend(
        sids(&fi.close(t(0)))
            .into_iter()
            .map(|s| (s, Dir::ToClient)),
    );
    assert_eq!(
        got,
        [(1, Dir::ToServer), (2, Dir::ToServer), (1, Dir::ToClient)]
    );

    // `flip` (an unbounded expression, so the whole tail is looked back at) is in the tail
    // of every later client message: it toggles once, not once per message, so the bit is
    // set when the server says `state`.
    let mut fi = FlowInspector::new(e, flow());
    for (dir, data) in [
        (Dir::ToServer, &b"fl"[..]),
        (Dir::ToClient, b"."),
        (Dir::ToServer, b"ip"),
        (Dir::ToClient, b"."),
        (Dir::ToServer, b"x"),
    ] {
        assert!(fi.stream(dir, data, t(0)).is_empty());
    }
    let mut got = sids(&fi.stream(Dir::ToClient, b"state", t(0)));
    got.extend(sids(&fi.close(t(0))));
    assert_eq!(got, [4]);
}

#[test]
fn rules_tied_to_the_message_do_not_match_across_messages() {
    let e = engine(concat!(
        "alert tcp any any -> any any (msg:\"d\"; content:\"abX\"; depth:3; sid:1;)\n",
        "alert tcp any any -> any any (msg:\"s\"; content:\"PING\"; startswith; sid:2;)\n",
        "alert tcp any any -> any any (msg:\"z\"; dsize:4; content:\"ab\"; sid:3;)\n",
        "alert tcp any any -> any any (msg:\"i\"; content:\"Q\"; isdataat:3; sid:4;)\n",
        "alert tcp any any -> any any (msg:\"r\"; content:\"K\"; distance:2; sid:5;)\n",
    ));
    let run = |msgs: &[&[u8]]| {
        let mut fi = FlowInspector::new(e.clone(), flow());
        let mut got = Vec::new();
        for m in msgs {
            got.extend(sids(&fi.stream(Dir::ToServer, m, t(0))));
            got.extend(sids(&fi.stream(Dir::ToClient, b".", t(0))));
        }
        got.extend(sids(&fi.close(t(0))));
        got.sort_unstable();
        got
    };
    // Across messages: none of them (positions count from each message's start, and
    // `dsize` is the message's size).
    let apart: &[&[u8]] = &[
        b"ab", b"X", b"PI", b"NG", b"a", b"b-..", b"...", b"Q", b"..", b"K",
    ];
    assert!(run(apart).is_empty());
    // Within one message: each of them.
    assert_eq!(run(&[b"abX"]), [1]);
    assert_eq!(run(&[b"PING"]), [2]);
    assert_eq!(run(&[b"xab-"]), [3]);
    assert_eq!(run(&[b"Q..."]), [4]);
    assert_eq!(run(&[b"..K"]), [5]);
    // Each message counts from its own start, whatever came before.
    assert_eq!(run(&[b"hello", b"ping", b"abX"]), [1]);
}

#[test]
fn negations_see_only_the_bytes_their_rule_can_span() {
    // `!"z"` is searched for anywhere, so this rule spans one byte and keeps the message
    // semantics: a `z` in an earlier message does not count. The relative negation spans
    // `USER ` and the 12 bytes after it, across messages.
    let e = engine(concat!(
        "alert tcp any any -> any any (msg:\"q\"; flow:to_server; content:\"q\"; content:!\"z\"; sid:1;)\n",
        "alert tcp any any -> any any (msg:\"u\"; flow:to_server; content:\"USER \"; content:!\"anonymous\"; distance:0; within:12; sid:2;)\n",
    ));
    let run = |msgs: &[&[u8]]| {
        let mut fi = FlowInspector::new(e.clone(), flow());
        let mut got = Vec::new();
        for m in msgs {
            got.extend(sids(&fi.stream(Dir::ToServer, m, t(0))));
            got.extend(sids(&fi.stream(Dir::ToClient, m, t(0))));
        }
        got.extend(sids(&fi.close(t(0))));
        got
    };
    assert_eq!(run(&[b"z", b"q"]), [1]);
    assert!(run(&[b"zq"]).is_empty());
    assert!(run(&[b"US", b"ER anonymous"]).is_empty());
    assert_eq!(run(&[b"US", b"ER bob"]), [2]);
    // The rule matched already with `USER ` in the first message: only once.
    assert_eq!(run(&[b"USER bob", b"x", b"y"]), [2]);
}

#[test]
fn the_tail_is_what_the_rules_can_span() {
    let tail = |rules: &str, limits: Limits| {
        let e = engine_with(rules, &Vars::east_west(), limits);
        (e.stream_tail(Dir::ToServer), e.stream_tail(Dir::ToClient))
    };
    let d = Limits::default;
    let rule = |opts: &str| format!("alert tcp any any -> any any (msg:\"r\"; {opts} sid:1;)");
    assert_eq!(tail(&rule(r#"content:"EVIL-PAYLOAD";"#), d()), (11, 11));
    assert_eq!(
        tail(&rule(r#"flow:to_server; content:"EVIL-PAYLOAD";"#), d()),
        (11, 0)
    );
    // `USER ` (5), then `root` within 8 bytes of it: 13 bytes.
    assert_eq!(
        tail(
            &rule(r#"content:"USER "; content:"root"; distance:0; within:8;"#),
            d()
        ),
        (12, 12)
    );
    // A bounded expression: at most 5 bytes; then 1 byte 2 after it: 8.
    assert_eq!(
        tail(
            &rule(r#"pcre:"/ab{1,4}/"; byte_test:1,>,3,2,relative;"#),
            d()
        ),
        (7, 7)
    );
    // Unbounded: up to the overlap, at most half a window.
    assert_eq!(tail(&rule(r#"pcre:"/a.*b/";"#), d()), (2048, 2048));
    assert_eq!(
        tail(&rule(r#"content:"a"; content:"b";"#), d()),
        (2048, 2048)
    );
    assert_eq!(
        tail(&rule(r#"content:"a"; content:"b"; distance:0;"#), d()),
        (2048, 2048)
    );
    let small = Limits {
        stream_window: 100,
        stream_overlap: 64,
        ..Limits::default()
    };
    assert_eq!(tail(&rule(r#"pcre:"/a.*b/";"#), small), (50, 50));
    // Tied to the message: no tail.
    assert_eq!(tail(&rule(r#"content:"X"; depth:3;"#), d()), (0, 0));
    assert_eq!(tail(&rule(r#"dsize:4; content:"ab";"#), d()), (0, 0));
    assert_eq!(tail(&rule(r#"content:"K"; distance:2;"#), d()), (0, 0));
    // HTTP rules do not inspect the raw stream.
    assert_eq!(
        tail(
            r#"alert http any any -> any any (msg:"h"; http.uri; content:"/etc/passwd"; sid:1;)"#,
            d()
        ),
        (0, 0)
    );
}

#[test]
fn long_messages_do_not_match_the_overlap_again() {
    // `flip` (unbounded: the rule looks back at the whole overlap) in the overlap of the
    // second window toggles once, not twice.
    let limits = Limits {
        stream_window: 256,
        stream_overlap: 64,
        ..Limits::default()
    };
    let e = engine_with(
        concat!(
            "alert tcp any any -> any any (msg:\"flip\"; flow:to_server; pcre:\"/fli+p/\"; flowbits:toggle,t; flowbits:noalert; sid:1;)\n",
            "alert tcp any any -> any any (msg:\"state\"; flow:to_client; content:\"state\"; flowbits:isset,t; sid:2;)\n",
            "alert tcp any any -> any any (msg:\"wide\"; flow:to_server; content:\"A\"; content:\"B\"; distance:0; sid:3;)\n",
        ),
        &Vars::east_west(),
        limits,
    );
    let mut data = vec![b'.'; 250];
    data.extend_from_slice(b"flip");
    data.extend(vec![b'.'; 200]);
    let mut fi = FlowInspector::new(e.clone(), flow());
    assert!(fi.stream(Dir::ToServer, &data, t(0)).is_empty());
    assert!(fi.stream(Dir::ToClient, b"state", t(0)).is_empty());
    // A test of a bit some rule toggles is decided when the message is complete.
    assert_eq!(sids(&fi.close(t(0))), [2]);
    // An unbounded chain across a window boundary, within the overlap.
    let mut data = vec![b'.'; 200];
    data.push(b'A');
    data.extend(vec![b'.'; 100]);
    data.push(b'B');
    let mut fi = FlowInspector::new(e, flow());
    let mut got = sids(&fi.stream(Dir::ToServer, &data, t(0)));
    got.extend(sids(&fi.close(t(0))));
    assert_eq!(got, [3]);
}

// ---- UDP ----

fn udp_flow(client: &str, server: &str) -> FlowMeta {
    FlowMeta {
        src: client.parse().unwrap(),
        dst: server.parse().unwrap(),
    }
}

fn sip() -> FlowMeta {
    udp_flow("10.0.0.1:40000", "10.0.0.2:5060")
}

/// A DNS query message (no TCP length prefix).
fn dns_query(name: &str, id: u16) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    m
}

#[test]
fn udp_datagrams_are_matched_each_on_its_own() {
    let e = engine(concat!(
        "alert udp any any -> any any (msg:\"evil\"; content:\"EVIL-PAYLOAD\"; sid:1;)\n",
        "alert udp any any -> any any (msg:\"start\"; content:\"PING\"; depth:4; sid:2;)\n",
        "alert udp any any -> any any (msg:\"chain\"; content:\"USER \"; content:\"root\"; distance:0; within:8; sid:3;)\n",
        "alert tcp any any -> any any (msg:\"tcp only\"; content:\"EVIL\"; sid:4;)\n",
        "alert ip any any -> any any (msg:\"any transport\"; content:\"uid=0|28|root|29|\"; sid:5;)\n",
    ));
    let mut fi = FlowInspector::new_udp(e.clone(), sip());
    assert_eq!(fi.transport(), Transport::Udp);
    // No reassembly: a pattern split across two datagrams is not seen, in either order of
    // directions in between.
    assert!(fi.datagram(Dir::ToServer, b"xx EVIL-", t(0)).is_empty());
    assert!(fi.datagram(Dir::ToServer, b"PAYLOAD", t(0)).is_empty());
    assert!(fi.datagram(Dir::ToServer, b"USER ", t(0)).is_empty());
    assert!(fi.datagram(Dir::ToClient, b"?", t(0)).is_empty());
    assert!(fi.datagram(Dir::ToServer, b"root", t(0)).is_empty());
    // Positions count from each datagram's start.
    assert!(fi.datagram(Dir::ToServer, b"..PING", t(0)).is_empty());
    assert_eq!(sids(&fi.datagram(Dir::ToServer, b"PING", t(1))), [2]);
    // Whole in one datagram: alerts, on every datagram (Suricata alerts per packet).
    let v = fi.datagram(Dir::ToServer, b"an EVIL-PAYLOAD, USER root", t(2));
    assert_eq!(sids(&v), [1, 3]);
    let a = &v.alerts[0];
    assert_eq!(
        (a.dir, a.transport, a.tx_id, a.app_proto),
        (Dir::ToServer, Transport::Udp, None, AppProto::Unknown)
    );
    assert_eq!(
        sids(&fi.datagram(Dir::ToServer, b"EVIL-PAYLOAD", t(3))),
        [1]
    );
    assert_eq!(
        sids(&fi.datagram(Dir::ToClient, b"EVIL-PAYLOAD", t(3))),
        [1]
    );
    assert_eq!(sids(&fi.datagram(Dir::ToClient, b"uid=0(root)", t(3))), [5]);
    assert!(fi.close(t(4)).is_empty());
    // A UDP inspector takes no stream bytes, and a TCP inspector no datagrams; `udp` rules
    // do not see TCP streams, `ip` rules see both.
    let mut fi = FlowInspector::new_udp(e.clone(), sip());
    assert!(fi.stream(Dir::ToServer, b"EVIL-PAYLOAD", t(0)).is_empty());
    let mut fi = FlowInspector::new(e, flow());
    assert_eq!(fi.transport(), Transport::Tcp);
    assert!(fi.datagram(Dir::ToServer, b"EVIL-PAYLOAD", t(0)).is_empty());
    let mut got = sids(&fi.stream(Dir::ToServer, b"EVIL-PAYLOAD uid=0(root)", t(0)));
    got.extend(sids(&fi.close(t(0))));
    got.sort_unstable();
    assert_eq!(got, [4, 5]);
}

#[test]
fn udp_dsize_is_the_datagram_length() {
    let e = engine(concat!(
        "alert udp any any -> any any (msg:\"d\"; dsize:4; content:\"AB\"; depth:2; sid:1;)\n",
        "alert udp any any -> any any (msg:\"big\"; dsize:>100; sid:2;)\n",
        "alert udp any any -> any any (msg:\"empty\"; dsize:0; sid:3;)\n",
    ));
    let mut fi = FlowInspector::new_udp(e, sip());
    // Two datagrams that would make a 4-byte message on a stream are two of 2 bytes.
    assert!(fi.datagram(Dir::ToServer, b"AB", t(0)).is_empty());
    assert!(fi.datagram(Dir::ToServer, b"CD", t(0)).is_empty());
    assert_eq!(sids(&fi.datagram(Dir::ToServer, b"ABCD", t(0))), [1]);
    assert!(fi.datagram(Dir::ToServer, b"ABCDE", t(0)).is_empty());
    assert_eq!(sids(&fi.datagram(Dir::ToClient, &[b'x'; 101], t(0))), [2]);
    assert!(fi.datagram(Dir::ToClient, &[b'x'; 100], t(0)).is_empty());
    assert_eq!(sids(&fi.datagram(Dir::ToServer, b"", t(0))), [3]);
}

#[test]
fn udp_direction_and_established_follow_the_first_datagram() {
    let e = engine(concat!(
        "alert udp any any -> any 5060 (msg:\"to sip\"; content:\"INVITE\"; depth:6; sid:1;)\n",
        "alert udp any any -> any any (msg:\"reply\"; flow:to_client; content:\"200 OK\"; sid:2;)\n",
        "alert udp any any -> any any (msg:\"est\"; flow:established,to_server; content:\"ACK\"; sid:3;)\n",
        "alert udp any any -> any any (msg:\"est reply\"; flow:established,to_client; content:\"200 OK\"; sid:4;)\n",
        "alert udp any 5060 <> any any (msg:\"both\"; content:\"BYE\"; sid:5;)\n",
    ));
    let mut fi = FlowInspector::new_udp(e.clone(), sip());
    // Not established until a datagram went each way.
    assert_eq!(
        sids(&fi.datagram(Dir::ToServer, b"INVITE sip:a ACK", t(0))),
        [1]
    );
    // The server's datagrams are to_client, and do not match `-> any 5060` (they come from
    // 5060). The first reply makes the session established, itself included.
    let v = fi.datagram(Dir::ToClient, b"INVITE 200 OK", t(0));
    assert_eq!(sids(&v), [2, 4]);
    assert!(v.alerts.iter().all(|a| a.dir == Dir::ToClient));
    assert_eq!(sids(&fi.datagram(Dir::ToServer, b"ACK", t(0))), [3]);
    // `<>`: either orientation.
    assert_eq!(sids(&fi.datagram(Dir::ToServer, b"BYE", t(0))), [5]);
    assert_eq!(sids(&fi.datagram(Dir::ToClient, b"BYE", t(0))), [5]);
    // Replies only: the client never spoke, so not established either.
    let mut fi = FlowInspector::new_udp(e, sip());
    assert_eq!(sids(&fi.datagram(Dir::ToClient, b"200 OK", t(0))), [2]);
}

#[test]
fn udp_header_ports_and_variables() {
    let mut vars = Vars::east_west();
    vars.set("SIP_PORTS", "[5060,5061]").unwrap();
    let e = engine_with(
        concat!(
            "alert udp any [1024:,!40001] -> any $SIP_PORTS (msg:\"sip\"; content:\"X\"; sid:1;)\n",
            "alert udp any any -> any !$SIP_PORTS (msg:\"not sip\"; content:\"X\"; sid:2;)\n",
        ),
        &vars,
        Limits::default(),
    );
    let run = |client: &str, server: &str| {
        let mut fi = FlowInspector::new_udp(e.clone(), udp_flow(client, server));
        sids(&fi.datagram(Dir::ToServer, b"X", t(0)))
    };
    assert_eq!(run("10.0.0.1:40000", "10.0.0.2:5060"), [1]);
    assert_eq!(run("10.0.0.1:40000", "10.0.0.2:5061"), [1]);
    assert_eq!(run("10.0.0.1:40001", "10.0.0.2:5061"), Vec::<u32>::new());
    assert_eq!(run("10.0.0.1:1000", "10.0.0.2:5060"), Vec::<u32>::new());
    assert_eq!(run("10.0.0.1:40000", "10.0.0.2:5062"), [2]);
}

#[test]
fn dns_query_over_udp() {
    let e = engine(concat!(
        "alert dns any any -> any any (msg:\"q\"; dns.query; content:\"bad.test\"; nocase; sid:1;)\n",
        "alert udp any any -> any 53 (msg:\"u\"; content:\"|00 01 00 00|\"; offset:4; depth:4; sid:2;)\n",
        "alert tcp any any -> any any (msg:\"tcp dns\"; dns.query; content:\"bad\"; sid:3;)\n",
        "alert udp any any -> any any (msg:\"udp dns\"; dns.query; content:\"bad\"; nocase; sid:4;)\n",
        "alert dns any any -> any any (msg:\"raw\"; content:\"|04|test\"; sid:5;)\n",
    ));
    let dns = udp_flow("10.0.0.1:40000", "10.0.0.2:53");
    let mut fi = FlowInspector::new_udp(e.clone(), dns);
    let v = fi.datagram(Dir::ToServer, &dns_query("BAD.test", 7), t(0));
    assert_eq!(sids(&v), [1, 4, 2, 5]);
    assert_eq!(fi.app_proto(), AppProto::Dns);
    let q = &v.alerts[0];
    assert_eq!(
        (q.dns_query.as_deref(), q.tx_id, q.app_proto, q.transport),
        (Some("BAD.test"), Some(0), AppProto::Dns, Transport::Udp)
    );
    let ev = serde_json::to_value(crate::alert_event(q, &dns, 1, None)).unwrap();
    assert_eq!(ev["proto"], "UDP");
    assert_eq!(ev["app_proto"], "dns");
    assert_eq!(ev["dns"]["version"], 3);
    assert_eq!(ev["dns"]["queries"][0]["rrname"], "BAD.test");
    assert_eq!(ev["dest_port"], 53);
    // The next query is the next transaction; a response is not a query.
    let v = fi.datagram(Dir::ToServer, &dns_query("bad.test", 8), t(1));
    assert_eq!(v.alerts[0].tx_id, Some(1));
    let mut resp = dns_query("bad.test", 8);
    resp[2] |= 0x80;
    assert_eq!(sids(&fi.datagram(Dir::ToClient, &resp, t(1))), [5]);

    // Off port 53 a query is DNS only when the node says so.
    let other = udp_flow("10.0.0.1:40000", "10.0.0.2:5353");
    let mut fi = FlowInspector::new_udp(e.clone(), other);
    assert!(
        fi.datagram(Dir::ToServer, &dns_query("bad.test", 1), t(0))
            .is_empty()
    );
    assert_eq!(fi.app_proto(), AppProto::Unknown);
    let mut fi = FlowInspector::new_udp(e.clone(), other);
    fi.set_app_proto(AppProto::Dns);
    assert_eq!(
        sids(&fi.datagram(Dir::ToServer, &dns_query("bad.test", 1), t(0))),
        [1, 4, 5]
    );
    // Only the client's first datagram decides: one that is not DNS leaves the session
    // undetected, as in Suricata.
    let mut fi = FlowInspector::new_udp(e.clone(), dns);
    assert!(fi.datagram(Dir::ToServer, b"hello", t(0)).is_empty());
    assert_eq!(
        sids(&fi.datagram(Dir::ToServer, &dns_query("bad.test", 1), t(0))),
        [2]
    );
    assert_eq!(fi.app_proto(), AppProto::Unknown);
    // A `udp` rule with DNS buffers does not see DNS over TCP.
    let mut fi = FlowInspector::new(e, udp_flow("10.0.0.1:40000", "10.0.0.2:53"));
    fi.set_app_proto(AppProto::Dns);
    let msg = dns_query("bad.test", 1);
    let mut framed = (msg.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&msg);
    let mut got = sids(&fi.stream(Dir::ToServer, &framed, t(0)));
    got.extend(sids(&fi.close(t(0))));
    assert_eq!(got, [1, 3, 5]);
}

#[test]
fn udp_thresholds_flowbits_noalert_pass_and_drop() {
    let e = engine(concat!(
        "alert udp any any -> any any (msg:\"scan\"; content:\"probe\"; threshold:type limit, track by_src, count 2, seconds 60; sid:1;)\n",
        "alert udp any any -> any any (msg:\"set\"; flow:to_server; content:\"LOGIN\"; flowbits:set,login; flowbits:noalert; sid:2;)\n",
        "drop udp any any -> any any (msg:\"chk\"; flow:to_client; content:\"OK\"; flowbits:isset,login; sid:3;)\n",
        "pass udp any any -> any any (msg:\"trusted\"; content:\"TRUSTED\"; sid:4;)\n",
    ));
    // The limit counts datagrams, across sessions, and starts over after its period.
    let mut n = 0;
    for i in 0..3 {
        let mut fi = FlowInspector::new_udp(e.clone(), sip());
        for _ in 0..2 {
            n += fi.datagram(Dir::ToServer, b"probe", t(i)).alerts.len();
        }
    }
    assert_eq!(n, 2);
    let mut fi = FlowInspector::new_udp(e.clone(), sip());
    assert_eq!(sids(&fi.datagram(Dir::ToServer, b"probe", t(61))), [1]);
    // A bit set by one datagram is tested by a later one; the noalert rule is silent.
    let mut fi = FlowInspector::new_udp(e.clone(), sip());
    assert!(fi.datagram(Dir::ToClient, b"OK", t(0)).is_empty());
    assert!(fi.datagram(Dir::ToServer, b"LOGIN bob", t(0)).is_empty());
    let v = fi.datagram(Dir::ToClient, b"OK", t(0));
    assert_eq!(sids(&v), [3]);
    assert!(v.blocks());
    // `pass` ends inspection of the session.
    let mut fi = FlowInspector::new_udp(e, sip());
    let v = fi.datagram(Dir::ToServer, b"TRUSTED LOGIN", t(0));
    assert_eq!(sids(&v), [4]);
    assert!(!v.blocks() && fi.is_passed());
    assert!(fi.datagram(Dir::ToClient, b"OK", t(0)).is_empty());
}

fn gzip(b: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

#[test]
fn compressed_bodies_are_inspected_decoded() {
    let e = engine(concat!(
        "alert http any any -> any any (msg:\"b\"; flow:to_server; http.request_body; content:\"cmd=whoami\"; sid:1;)\n",
        "alert http any any -> any any (msg:\"fd\"; flow:to_client; file.data; content:\"<script>evil\"; sid:2;)\n",
        "alert tcp any any -> any any (msg:\"raw\"; content:\"cmd=whoami\"; sid:3;)\n",
    ));
    let mut fi = FlowInspector::new(e, flow());
    fi.set_app_proto(AppProto::Http1);
    let headers: [(&str, &[u8]); 1] = [("content-encoding", b"gzip")];
    let post = HttpRequest {
        method: "POST",
        ..get("/run", &headers)
    };
    assert!(fi.http_request(&post, t(0)).is_empty());
    let body = gzip(b"a=1&cmd=whoami&b=2");
    // The raw stream sees the compressed bytes (no alert there), the body rule the text.
    assert!(fi.stream(Dir::ToServer, &body, t(0)).is_empty());
    let (first, rest) = body.split_at(7);
    assert!(fi.http_request_body(first, false, t(0)).is_empty());
    assert_eq!(sids(&fi.http_request_body(rest, true, t(0))), [1]);
    let ok = HttpResponse {
        status: 200,
        reason: "OK",
        headers: &[("Content-Encoding", b"deflate")],
        version: HttpVersion::Http11,
        raw_head: None,
    };
    assert!(fi.http_response(&ok, t(0)).is_empty());
    // Mislabelled: gzip sent as deflate; decoded all the same.
    let page = gzip(b"<html><script>evil()</script>");
    assert_eq!(sids(&fi.http_response_body(&page, true, t(0))), [2]);
}

#[test]
fn a_decompression_bomb_is_cut_at_the_limit_and_said() {
    let e = engine(
        "alert http any any -> any any (msg:\"b\"; flow:to_server; http.request_body; content:\"never\"; sid:1;)\n",
    );
    let mut fi = FlowInspector::new(e, flow());
    fi.set_app_proto(AppProto::Http1);
    let headers: [(&str, &[u8]); 1] = [("Content-Encoding", b"gzip, gzip")];
    let post = HttpRequest {
        method: "POST",
        ..get("/upload", &headers)
    };
    assert!(fi.http_request(&post, t(0)).is_empty());
    let bomb = gzip(&gzip(&vec![0u8; 64 << 20]));
    assert!(bomb.len() < 100_000, "{}", bomb.len());
    let mut anomalies = Vec::new();
    for chunk in bomb.chunks(100) {
        let v = fi.http_request_body(chunk, false, t(0));
        anomalies.extend(v.anomalies);
    }
    anomalies.extend(fi.http_request_body(b"", true, t(0)).anomalies);
    assert_eq!(anomalies.len(), 1, "{anomalies:?}");
    let a = &anomalies[0];
    assert_eq!(
        (a.event.name(), a.dir, a.tx_id),
        ("COMPRESSION_BOMB", Dir::ToServer, Some(0))
    );
    assert!(
        matches!(a.event, DecodeEvent::CompressionBomb { decoded, .. } if decoded == 100 * 1024)
    );
    // Too many layers: said once, the outer ones stay encoded.
    let headers: [(&str, &[u8]); 1] = [("Content-Encoding", b"gzip, gzip, gzip")];
    let v = fi.http_request(
        &HttpRequest {
            method: "POST",
            ..get("/x", &headers)
        },
        t(1),
    );
    assert_eq!(
        v.anomalies.iter().map(|a| a.event).collect::<Vec<_>>(),
        [DecodeEvent::TooManyEncodingLayers]
    );
}

#[test]
fn http1_and_http2_rules_see_their_version_only() {
    let e = engine(concat!(
        "alert http1 any any -> any any (msg:\"1\"; flow:to_server; http.uri; content:\"/a\"; sid:1;)\n",
        "alert http2 any any -> any any (msg:\"2\"; flow:to_server; http.uri; content:\"/a\"; sid:2;)\n",
        "alert http any any -> any any (msg:\"any\"; flow:to_server; http.uri; content:\"/a\"; sid:3;)\n",
        "alert http2 any any -> any any (msg:\"2 raw\"; flow:to_server; http.method; content:\"GET\"; sid:4;)\n",
    ));
    for (app, version, want) in [
        (AppProto::Http1, HttpVersion::Http11, [1, 3]),
        (AppProto::Http2, HttpVersion::Http2, [2, 3]),
    ] {
        let mut fi = FlowInspector::new(e.clone(), flow());
        fi.set_app_proto(app);
        let req = HttpRequest {
            version,
            method: "POST",
            ..get("/a", &[])
        };
        assert_eq!(sids(&fi.http_request(&req, t(0))), want, "{app:?}");
    }
    let p = parse_rules(
        "t.rules",
        "alert http2 any any -> any any (http.uri; content:\"x\"; sid:9;)",
    );
    assert_eq!(p.rules[0].protocol, Protocol::Http2);
}

/// A real certificate (DER) for `cn` with organization `org`, signed by itself, serial 0x0AE1.
fn certificate(cn: &str, org: &str) -> Vec<u8> {
    let mut p = rcgen::CertificateParams::new(vec![cn.to_owned()]).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CountryName, "US");
    p.distinguished_name
        .push(rcgen::DnType::OrganizationName, org);
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x0a, 0xe1]));
    let key = rcgen::KeyPair::generate().unwrap();
    p.self_signed(&key).unwrap().der().to_vec()
}

#[test]
fn server_certificates_are_matched_up_to_tls12() {
    let e = engine(concat!(
        "alert tls any any -> any any (msg:\"subject\"; flow:established,to_client; tls.cert_subject; content:\"CN=evil.example\"; nocase; endswith; sid:1;)\n",
        "alert tls any any -> any any (msg:\"issuer\"; flow:from_server; tls.cert_issuer; content:\"C=US, O=Evil Org, CN=evil.example\"; bsize:33; sid:2;)\n",
        "alert tls any any -> any any (msg:\"serial\"; tls.cert_serial; content:\"0A:E1\"; sid:3;)\n",
        "alert tls any any -> any any (msg:\"a ca in the chain\"; flow:to_client; tls.certs; content:\"Root CA Org\"; sid:4;)\n",
        "alert tls any any -> any any (msg:\"other\"; tls.cert_subject; content:\"CN=good.example\"; sid:5;)\n",
    ));
    let leaf = certificate("evil.example", "Evil Org");
    let ca = certificate("root.example", "Root CA Org");
    let flight = crate::tls::server_flight(&[&leaf, &ca], false);
    let tls_flow = |e: &Arc<Engine>| {
        let mut fi = FlowInspector::new(e.clone(), flow());
        fi.set_app_proto(AppProto::Tls);
        assert!(
            fi.tls_client_hello(Some(&hello("evil.example")), t(0))
                .is_empty()
        );
        fi
    };
    // Whole, and a few bytes at a time: the same alerts, once.
    let mut fi = tls_flow(&e);
    let v = fi.stream(Dir::ToClient, &flight, t(0));
    assert_eq!(sids(&v), [1, 2, 3, 4]);
    assert!(v.alerts.iter().all(|a| a.dir == Dir::ToClient));
    assert!(fi.stream(Dir::ToClient, &flight, t(1)).is_empty());
    let mut fi = tls_flow(&e);
    let mut got = Vec::new();
    for c in flight.chunks(5) {
        got.extend(sids(&fi.stream(Dir::ToClient, c, t(0))));
    }
    got.sort_unstable();
    assert_eq!(got, [1, 2, 3, 4]);
    // TLS 1.3 encrypts its certificates: nothing to see.
    let mut fi = tls_flow(&e);
    assert!(
        fi.stream(
            Dir::ToClient,
            &crate::tls::server_flight(&[&leaf], true),
            t(0)
        )
        .is_empty()
    );
    // Not a TLS flow: the bytes are nobody's certificates.
    let mut fi = FlowInspector::new(e, flow());
    assert!(fi.stream(Dir::ToClient, &flight, t(0)).is_empty());
}

/// A TLS 1.2 ClientHello naming `sni`.
fn hello(sni: &str) -> ClientHello {
    ClientHello {
        legacy_version: 0x0303,
        sni: Some(sni.into()),
        cipher_suites: vec![0x2f],
        extensions: vec![0],
        ..ClientHello::default()
    }
}

/// Its record.
fn client_hello(sni: &str) -> Vec<u8> {
    hello(sni).to_record()
}

#[test]
fn stream_size_counts_sequence_space_to_the_message_end() {
    let e = engine(concat!(
        "alert tcp any any -> any any (msg:\"before the server spoke\"; flow:to_server; stream_size:server,<,5; content:\"HELLO\"; sid:1;)\n",
        "alert tcp any any -> any any (msg:\"early in the client's stream\"; flow:to_server; stream_size:client,<,70; content:\"X\"; sid:2;)\n",
        "alert tcp any any -> any any (msg:\"banner first\"; flow:to_client; stream_size:client,=,1; content:\"BANNER\"; sid:3;)\n",
        "alert tcp any any -> any any (msg:\"both past\"; stream_size:both,>,8; content:\"Z\"; sid:4;)\n",
        "alert tcp any any -> any any (msg:\"either\"; flow:to_server; stream_size:either,>=,80; content:\"Q\"; sid:5;)\n",
    ));
    let mut first = vec![b'.'; 50];
    first.extend(b"X HELLO Q");
    for step in [1, 7, first.len()] {
        let mut fi = FlowInspector::new(e.clone(), flow());
        for c in first.chunks(step) {
            // Decided when the message ends, whatever the cut.
            assert!(fi.stream(Dir::ToServer, c, t(0)).is_empty());
        }
        let mut got = sids(&fi.stream(Dir::ToClient, b"BANNER Z", t(0)));
        got.sort_unstable();
        // The client's message: 59 bytes, size 60 < 70; the server had sent nothing (1);
        // Q needs 80 on a side: not yet.
        assert_eq!(got, [1, 2], "step {step}");
        let mut got = sids(&fi.stream_end(Dir::ToClient, t(0)));
        // The banner came after the client spoke; its 8 bytes make 9 > 8, the client's 60.
        got.sort_unstable();
        assert_eq!(got, [4], "step {step}");
        let mut got = sids(&fi.stream(Dir::ToServer, b"X HELLO Q Z", t(0)));
        got.extend(sids(&fi.close(t(0))));
        got.sort_unstable();
        // The client is at 71: no X; the server at 9: no HELLO; Q needs 80: no; Z: both
        // sides past 8 (it alerts once per direction).
        assert_eq!(got, [4], "step {step}");
    }
    let mut fi = FlowInspector::new(e.clone(), flow());
    assert!(fi.stream(Dir::ToClient, b"BANNER", t(0)).is_empty());
    assert_eq!(sids(&fi.stream_end(Dir::ToClient, t(0))), [3]);
    let mut fi = FlowInspector::new(e.clone(), flow());
    let long = [vec![b'Q'; 100], b" more".to_vec()].concat();
    assert!(fi.stream(Dir::ToServer, &long, t(0)).is_empty());
    assert_eq!(sids(&fi.close(t(0))), [5]);
    // Never on UDP.
    let mut fi = FlowInspector::new_udp(e, flow());
    assert!(fi.datagram(Dir::ToServer, b"X HELLO", t(0)).is_empty());
}

#[test]
fn xbits_span_flows_of_a_host_until_they_expire() {
    let e = engine(concat!(
        "alert tcp any any -> any any (msg:\"login seen\"; flow:to_server; content:\"LOGIN\"; xbits:set,seen.login,track ip_src,expire 30; noalert; sid:1;)\n",
        "alert tcp any any -> any any (msg:\"fetch after login elsewhere\"; flow:to_server; content:\"FETCH\"; xbits:isset,seen.login,track ip_src; sid:2;)\n",
        "alert tcp any any -> any any (msg:\"fetch without\"; flow:to_server; content:\"FETCH\"; xbits:isnotset,seen.login,track ip_src; sid:3;)\n",
        "alert tcp any any -> any any (msg:\"pair\"; flow:to_client; content:\"OK\"; xbits:set,pair.ok,track ip_pair,expire 10; noalert; sid:4;)\n",
        "alert tcp any any -> any any (msg:\"pair seen\"; flow:to_server; content:\"AGAIN\"; xbits:isset,pair.ok,track ip_pair; sid:5;)\n",
    ));
    let meta = |src: &str, dst: &str| FlowMeta {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
    };
    let a = meta("10.0.0.1:40000", "10.0.0.2:80");
    let a_other = meta("10.0.0.1:40001", "10.0.0.3:80");
    let b = meta("10.0.0.9:40000", "10.0.0.2:80");
    let send = |m: FlowMeta, dir: Dir, bytes: &[u8], at: u64| {
        let mut fi = FlowInspector::new(e.clone(), m);
        sids(&fi.stream(dir, bytes, t(at)))
    };
    assert_eq!(send(a, Dir::ToServer, b"FETCH", 0), [3]);
    // Set and tested in one message: the set is evaluated first.
    assert_eq!(send(a, Dir::ToServer, b"LOGIN FETCH", 1), [2]);
    // Another flow of the same client, to another server.
    assert_eq!(send(a_other, Dir::ToServer, b"FETCH", 10), [2]);
    // Another client.
    assert_eq!(send(b, Dir::ToServer, b"FETCH", 10), [3]);
    // Expired after 30 s.
    assert_eq!(send(a_other, Dir::ToServer, b"FETCH", 31), [3]);
    // A pair is the same whichever way: set by the server's answer, tested by the client.
    assert!(send(a, Dir::ToClient, b"OK", 40).is_empty());
    assert_eq!(send(a, Dir::ToServer, b"AGAIN", 45), [5]);
    assert!(send(a_other, Dir::ToServer, b"AGAIN", 45).is_empty());
}

#[test]
fn smtp_and_ftp_are_recognised_by_the_first_command() {
    let e = engine(concat!(
        "alert smtp any any -> any any (msg:\"mail\"; flow:to_server; content:\"MAIL FROM\"; sid:1;)\n",
        "alert ftp any any -> any any (msg:\"ftp traversal\"; flow:to_server; content:\"CWD ../\"; sid:2;)\n",
        "alert ftp any any -> any any (msg:\"ftp banner\"; flow:to_client; content:\"230 \"; sid:3;)\n",
        "alert tcp any any -> any any (msg:\"any\"; flow:to_server; content:\"CWD ../\"; sid:4;)\n",
    ));
    let run = |turns: &[(Dir, &[u8])], step: usize| {
        let mut fi = FlowInspector::new(e.clone(), flow());
        let mut got = Vec::new();
        for (dir, bytes) in turns {
            for c in bytes.chunks(step) {
                got.extend(sids(&fi.stream(*dir, c, t(0))));
            }
        }
        got.extend(sids(&fi.close(t(0))));
        got.sort_unstable();
        (got, fi.app_proto())
    };
    for step in [1, 3, 100] {
        let smtp: &[(Dir, &[u8])] = &[
            (Dir::ToClient, b"220 mx ESMTP\r\n"),
            (Dir::ToServer, b"ehlo me\r\n"),
            (Dir::ToClient, b"250 OK\r\n"),
            (Dir::ToServer, b"MAIL FROM:<a@b>\r\n"),
        ];
        assert_eq!(run(smtp, step), (vec![1], AppProto::Smtp), "step {step}");
        let ftp: &[(Dir, &[u8])] = &[
            (Dir::ToClient, b"220 ftp\r\n"),
            (Dir::ToServer, b"USER x\r\n"),
            (Dir::ToClient, b"230 in\r\n"),
            (Dir::ToServer, b"CWD ../etc\r\n"),
        ];
        assert_eq!(
            run(ftp, step),
            (vec![2, 3, 4], AppProto::Ftp),
            "step {step}"
        );
        // The same commands after another first line: neither protocol.
        let other: &[(Dir, &[u8])] = &[
            (Dir::ToServer, b"HELLO\r\n"),
            (Dir::ToServer, b"MAIL FROM:<a@b>\r\nCWD ../etc\r\n"),
        ];
        assert_eq!(
            run(other, step),
            (vec![4], AppProto::Unknown),
            "step {step}"
        );
    }
}

#[test]
fn tls_sni_is_the_name_as_sent_even_one_the_node_refuses() {
    let e = engine(concat!(
        "alert tls any any -> any any (msg:\"doh list\"; tls.sni; content:\"doh.dns.sb, doh.sb\"; bsize:18; sid:1;)\n",
        "alert tls any any -> any any (msg:\"case\"; tls.sni; content:\"Evil.Example\"; sid:2;)\n",
        "alert tls any any -> any any (msg:\"ja3\"; ja3.string; content:\"771,47,0,,\"; bsize:10; sid:3;)\n",
    ));
    let sent = |raw: &[u8]| {
        let hello = ClientHello {
            sni: None,
            sni_raw: Some(raw.to_vec()),
            ..hello("unused.example")
        };
        let mut fi = FlowInspector::new(e.clone(), flow());
        let v = fi.stream(Dir::ToServer, &hello.to_record(), t(0));
        (sids(&v), v.alerts.first().and_then(|a| a.tls_sni.clone()))
    };
    // Not a DNS name (the node treats the hello as unreadable): the rules still see it.
    assert_eq!(
        sent(b"doh.dns.sb, doh.sb"),
        (vec![1, 3], Some("doh.dns.sb, doh.sb".to_string()))
    );
    assert_eq!(sent(b"Evil.Example").0, [2, 3]);
    assert_eq!(sent(b"evil.example").0, [3]);
}

#[test]
fn smtp_file_data_is_each_attachment() {
    let e = engine(concat!(
        "alert smtp any any -> any any (msg:\"ps\"; flow:to_server; file.data; content:\"%!PS\"; startswith; content:\"restore\"; distance:0; sid:1;)\n",
        "alert smtp any any -> any any (msg:\"text\"; flow:to_server; file.data; content:\"hello\"; sid:2;)\n",
        "alert smtp any any -> any any (msg:\"raw\"; flow:to_server; content:\"JSFQUy1B\"; sid:3;)\n",
    ));
    let mail = concat!(
        "EHLO me\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n",
        "Content-Type: multipart/mixed; boundary=XX\r\n\r\n",
        "--XX\r\nContent-Type: text/plain\r\n\r\nhello\r\n",
        "--XX\r\nContent-Type: application/postscript; name=a.ps\r\n",
        "Content-Transfer-Encoding: base64\r\n\r\nJSFQUy1BZG9i\r\nZSBsZWdhbCByZXN0b3Jl\r\n--XX--\r\n",
        ".\r\nQUIT\r\n",
    )
    .as_bytes();
    for step in [1, 7, mail.len()] {
        let mut fi = FlowInspector::new(e.clone(), flow());
        let mut alerts = Vec::new();
        for c in mail.chunks(step) {
            alerts.extend(fi.stream(Dir::ToServer, c, t(0)).alerts);
        }
        alerts.extend(fi.close(t(0)).alerts);
        let mut got: Vec<u32> = alerts.iter().map(|a| a.sid).collect();
        got.sort_unstable();
        // The attachment decoded; the text part is no file; the raw stream as sent.
        assert_eq!(got, [1, 3], "step {step}");
        let file = alerts.iter().find(|a| a.sid == 1).unwrap();
        assert_eq!(
            (file.app_proto, file.http.is_none()),
            (AppProto::Smtp, true)
        );
    }
}

#[test]
fn hash_transforms_give_raw_digests() {
    // Digests of `evil.example` as md5sum, sha1sum and sha256sum print them.
    let e = engine(concat!(
        "alert tls any any -> any any (msg:\"md5\"; tls.sni; to_md5; content:\"|96119eb3210daa472225fbad69fa9770|\"; bsize:16; sid:1;)\n",
        "alert tls any any -> any any (msg:\"sha1\"; tls.sni; to_sha1; content:\"|4675ff349e6eb1b49887750c01a39b8f6f0666a6|\"; sid:2;)\n",
        "alert tls any any -> any any (msg:\"sha256\"; tls.sni; to_sha256; content:\"|9c180de0cd699ee78897c47cfdb3e7ee1d75906e31b7746a4747dea536909837|\"; sid:3;)\n",
        "alert tls any any -> any any (msg:\"other\"; tls.sni; to_md5; content:\"|96119eb3210daa472225fbad69fa9770|\"; startswith; to_lowercase; content:\"x\"; sid:4;)\n",
    ));
    let mut fi = FlowInspector::new(e.clone(), flow());
    assert_eq!(
        sids(&fi.stream(Dir::ToServer, &client_hello("evil.example"), t(0))),
        [1, 2, 3]
    );
    let mut fi = FlowInspector::new(e, flow());
    assert!(
        fi.stream(Dir::ToServer, &client_hello("evil.example.org"), t(0))
            .is_empty()
    );
}

#[test]
fn tls_fingerprints_and_versions_from_the_handshake() {
    let e = engine(concat!(
        "alert tls any any -> any any (msg:\"ja3\"; ja3.hash; content:\"cd08e31494f9531f560d64c695473da9\"; sid:1;)\n",
        "alert tls any any -> any any (msg:\"ja3 legacy\"; ja3_hash; content:\"cd08e31494f9531f560d64c695473da9\"; sid:2;)\n",
        "alert tls any any -> any any (msg:\"ja3 string\"; ja3.string; content:\"771,4865-4866-4867-49195-\"; startswith; sid:3;)\n",
        "alert tls any any -> any any (msg:\"ja4\"; ja4.hash; content:\"t13d1516h2_8daaf6152771_e5627efa2ab1\"; sid:4;)\n",
        "alert tls any any -> any any (msg:\"client 1.3\"; flow:to_server; tls.version:1.3; sid:5;)\n",
        "alert tls any any -> any any (msg:\"client 1.2\"; flow:to_server; tls.version:1.2; sid:6;)\n",
        "alert tls any any -> any any (msg:\"ja3s\"; ja3s.hash; content:\"098e26e2609212ac1bfac552fbe04127\"; sid:7;)\n",
        "alert tls any any -> any any (msg:\"ja3s string\"; ja3s.string; content:\"771,49199,\"; startswith; sid:8;)\n",
        "alert tls any any -> any any (msg:\"server 1.2\"; flow:to_client; tls.version:1.2; sid:9;)\n",
        "alert tcp any any -> any any (msg:\"server 1.2 bytes\"; flow:to_client; tls.version:1.2; content:\"|16 03 03|\"; sid:10;)\n",
        "alert tls any any -> any any (msg:\"fingerprint\"; tls.cert_fingerprint; content:\":\"; sid:11;)\n",
    ));
    // Chrome's hello of the JA4 example, cut in two.
    let record = crate::fingerprint::chrome().to_record();
    let mut fi = FlowInspector::new(e.clone(), flow());
    let (a, b) = record.split_at(40);
    assert!(fi.stream(Dir::ToServer, a, t(0)).is_empty());
    let v = fi.stream(Dir::ToServer, b, t(0));
    assert_eq!(sids(&v), [1, 2, 3, 4, 5]);
    // A TLS 1.2 server: ServerHello with the extensions of the JA3S example.
    let leaf = certificate("server.example", "Server Org");
    let mut flight = crate::tls::server_flight(&[&leaf], false);
    // server_flight writes no extensions: give its hello those of the example.
    let mut exts = Vec::new();
    for (kind, data) in [
        (0xff01u16, &[0u8][..]),
        (0, &[]),
        (11, &[1, 0]),
        (35, &[]),
        (23, &[]),
    ] {
        exts.extend(kind.to_be_bytes());
        exts.extend((data.len() as u16).to_be_bytes());
        exts.extend(data);
    }
    let mut body = vec![3, 3];
    body.extend([7u8; 32]);
    body.extend([0, 0xc0, 0x2f, 0]);
    body.extend((exts.len() as u16).to_be_bytes());
    body.extend(exts);
    let mut first = vec![22, 3, 3];
    first.extend(((body.len() + 4) as u16).to_be_bytes());
    first.extend([2, 0, 0, body.len() as u8]);
    first.extend(body);
    let old_first = 5 + 4 + 2 + 32 + 1 + 3 + 2;
    flight.splice(..old_first, first);
    let mut got = sids(&fi.stream(Dir::ToClient, &flight, t(0)));
    got.sort_unstable();
    assert_eq!(got, [7, 8, 9, 10, 11]);

    // A client of TLS 1.2 only: its version, and no 1.3 rule.
    let mut fi = FlowInspector::new(e.clone(), flow());
    assert_eq!(
        sids(&fi.stream(Dir::ToServer, &client_hello("x.example"), t(0))),
        [6]
    );
    // Not TLS: none of them.
    let mut fi = FlowInspector::new(e, flow());
    assert!(
        fi.stream(Dir::ToServer, b"GET / HTTP/1.1\r\n\r\n", t(0))
            .is_empty()
    );
    assert!(fi.stream(Dir::ToClient, &flight, t(0)).is_empty());
}

#[test]
fn a_tls_flow_the_node_did_not_name_is_detected_from_its_bytes() {
    let e = engine(concat!(
        "alert tls any any -> any any (msg:\"sni\"; tls.sni; content:\"evil.example\"; sid:1;)\n",
        "alert tls any any -> any any (msg:\"subject\"; tls.cert_subject; content:\"CN=evil.example\"; sid:2;)\n",
    ));
    let hello = client_hello("evil.example");
    let leaf = certificate("evil.example", "Evil Org");
    let flight = crate::tls::server_flight(&[&leaf], false);
    let mut fi = FlowInspector::new(e.clone(), flow());
    let (a, b) = hello.split_at(20);
    assert!(fi.stream(Dir::ToServer, a, t(0)).is_empty());
    let v = fi.stream(Dir::ToServer, b, t(0));
    assert_eq!(sids(&v), [1]);
    assert_eq!(v.alerts[0].tls_sni.as_deref(), Some("evil.example"));
    assert_eq!(fi.app_proto(), AppProto::Tls);
    assert_eq!(sids(&fi.stream(Dir::ToClient, &flight, t(0))), [2]);
    // Plain TCP stays what it is: no TLS rule sees it. Decided on its first byte (`G` could
    // start an HTTP method, but never a TLS record): nothing kept.
    let mut fi = FlowInspector::new(e, flow());
    assert!(fi.stream(Dir::ToServer, b"GE", t(0)).is_empty());
    assert!(fi.detect_done && fi.detecting.is_none());
    assert!(
        fi.stream(Dir::ToServer, b"T / HTTP/1.1\r\n\r\n", t(0))
            .is_empty()
    );
    assert_eq!(fi.app_proto(), AppProto::Unknown);
    assert!(fi.stream(Dir::ToClient, &flight, t(0)).is_empty());
}

#[test]
fn profiles_select_their_rules_from_one_engine() {
    let e = engine(concat!(
        "alert tcp any any -> any any (msg:\"web\"; content:\"evil\"; classtype:web-application-attack; sid:1;)\n",
        "alert tcp any any -> any any (msg:\"trojan\"; content:\"evil\"; classtype:trojan-activity; sid:2;)\n",
        "alert tcp any any -> any any (msg:\"low\"; content:\"evil\"; priority:4; sid:3;)\n",
        "alert tcp any any -> any any (msg:\"set\"; content:\"LOGIN\"; flowbits:set,in; flowbits:noalert; sid:4;)\n",
        "alert tcp any any -> any any (msg:\"after login\"; content:\"evil\"; flowbits:isset,in; sid:5;)\n",
    ));
    let web = e.select(&Selection {
        classtypes: Some(vec!["web-application-attack".into()]),
        ..Selection::default()
    });
    let severe = e.select(&Selection {
        max_severity: Some(1),
        exclude_sids: vec![1],
        ..Selection::default()
    });
    assert_eq!((web.rule_count(), severe.rule_count()), (1, 1));
    let run = |mask: Option<&RuleMask>| {
        let fi = FlowInspector::new(e.clone(), flow());
        let mut fi = match mask {
            Some(m) => fi.only(m),
            None => fi,
        };
        let mut got = sids(&fi.stream(Dir::ToServer, b"LOGIN evil", t(0)));
        got.sort_unstable();
        got
    };
    assert_eq!(run(None), [1, 2, 3, 5]);
    assert_eq!(run(Some(&web)), [1]);
    assert_eq!(run(Some(&severe)), [2]);
    // A rule left out sets no flowbit either: as if the engine did not hold it.
    let no_login = e.select(&Selection {
        exclude_sids: vec![4],
        ..Selection::default()
    });
    assert_eq!(run(Some(&no_login)), [1, 2, 3]);
}

/// What each side sends, in order.
type Turns = Vec<(Dir, Vec<u8>)>;

/// A TLS record of `kind` carrying `body`.
fn tls_record(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut r = vec![kind, 3, 3];
    r.extend_from_slice(&(body.len() as u16).to_be_bytes());
    r.extend_from_slice(body);
    r
}

#[test]
fn encrypted_application_data_is_not_raw_inspected_as_suricata_by_default() {
    // A raw rule with the TLS rules' engine (hello read) and without (records walked only).
    for rules in [
        r#"alert tcp any any -> any any (msg:"raw"; content:"SECRET-WORD"; sid:1;)"#,
        "alert tcp any any -> any any (msg:\"raw\"; content:\"SECRET-WORD\"; sid:1;)\n\
         alert tls any any -> any any (msg:\"sni\"; tls.sni; content:\"nothing\"; sid:2;)",
    ] {
        let e = engine(rules);
        let hello = client_hello("shop.example");
        let flight = crate::tls::server_flight(&[b"leaf-der"], false);
        let secret = tls_record(23, b"..SECRET-WORD..");
        // (client's turns, server's turns) and whether the raw rule must fire.
        let finish = [tls_record(20, &[1]), tls_record(22, &[9; 40])].concat();
        let (c, srv) = (Dir::ToServer, Dir::ToClient);
        let cases: [(&str, Turns, bool); 5] = [
            // In application data after the server's handshake: encrypted, not inspected
            // (either side's first application data record ends raw inspection).
            (
                "client data",
                vec![
                    (c, hello.clone()),
                    (srv, flight.clone()),
                    (c, [finish.clone(), secret.clone()].concat()),
                ],
                false,
            ),
            (
                "server data",
                vec![
                    (c, hello.clone()),
                    (srv, flight.clone()),
                    (c, finish.clone()),
                    (srv, tls_record(23, b"answer")),
                    (c, secret.clone()),
                ],
                false,
            ),
            // In a handshake record (clear): inspected.
            (
                "handshake",
                vec![
                    (
                        c,
                        [hello.clone(), tls_record(22, b"..SECRET-WORD..")].concat(),
                    ),
                    (srv, flight.clone()),
                ],
                true,
            ),
            // Application data before the server answered (early data, or not TLS at all).
            (
                "early data",
                vec![
                    (c, [hello.clone(), secret.clone()].concat()),
                    (srv, flight.clone()),
                ],
                true,
            ),
            // Records that stop being records: the flow is not TLS, all of it is inspected.
            (
                "not records",
                vec![
                    (c, hello.clone()),
                    (srv, flight.clone()),
                    (c, b"plain text".to_vec()),
                    (srv, secret.clone()),
                ],
                true,
            ),
        ];
        for (name, turns, fires) in cases {
            // Each turn whole, then cut into 1-byte reads: the same verdict.
            for step in [usize::MAX, 1] {
                let mut fi = FlowInspector::new(e.clone(), flow());
                let mut fired = Vec::new();
                for (dir, turn) in &turns {
                    for piece in turn.chunks(step.min(turn.len())) {
                        fired.extend(sids(&fi.stream(*dir, piece, t(0))));
                    }
                }
                fired.extend(sids(&fi.close(t(0))));
                assert_eq!(fired.contains(&1), fires, "{name}, reads of {step}");
            }
        }
    }
    // A flow the client did not start with a handshake record is never cut.
    let e = engine(r#"alert tcp any any -> any any (msg:"raw"; content:"SECRET-WORD"; sid:1;)"#);
    let mut fi = FlowInspector::new(e, flow());
    assert!(fi.stream(Dir::ToServer, b"hello", t(0)).is_empty());
    let v = fi.stream(
        Dir::ToClient,
        &[tls_record(22, b"x"), tls_record(23, b"SECRET-WORD")].concat(),
        t(0),
    );
    assert_eq!(sids(&v), [1]);
}

#[test]
fn starttls_and_auth_tls_switch_the_flow_to_tls() {
    let e = engine(concat!(
        "alert tls any any -> any any (msg:\"sni\"; tls.sni; content:\"mail.example\"; sid:1;)\n",
        "alert tls any any -> any any (msg:\"cert\"; tls.cert_subject; content:\"CN=mail.example\"; sid:2;)\n",
        "alert tcp any any -> any any (msg:\"secret\"; content:\"SECRET-WORD\"; sid:3;)\n",
        "alert smtp any any -> any any (msg:\"asks\"; flow:to_server; content:\"STARTTLS\"; sid:4;)\n",
        "alert ftp any any -> any any (msg:\"asks\"; flow:to_server; content:\"AUTH TLS\"; sid:5;)\n",
    ));
    let leaf = certificate("mail.example", "Mail Org");
    let flight = crate::tls::server_flight(&[&leaf], false);
    let finish = [tls_record(20, &[1]), tls_record(22, &[9; 40])].concat();
    let secret = tls_record(23, b"..SECRET-WORD..");
    let (c, srv) = (Dir::ToServer, Dir::ToClient);
    let session = |greeting: &[u8], ask: &[u8], answer: &[u8]| -> Turns {
        vec![
            (srv, greeting.to_vec()),
            (c, b"EHLO client.example\r\n".to_vec()),
            (
                srv,
                b"250-mail.example\r\n250-STARTTLS\r\n250 OK\r\n".to_vec(),
            ),
            (c, ask.to_vec()),
            (srv, answer.to_vec()),
        ]
    };
    let tls = |turns: &mut Turns| {
        turns.push((c, client_hello("mail.example")));
        turns.push((srv, flight.clone()));
        turns.push((c, [finish.clone(), secret.clone()].concat()));
        turns.push((srv, secret.clone()));
    };
    let run = |turns: &Turns, piece: usize| {
        let mut fi = FlowInspector::new(e.clone(), flow());
        let mut got = Vec::new();
        for (dir, bytes) in turns {
            for p in bytes.chunks(piece) {
                got.extend(sids(&fi.stream(*dir, p, t(0))));
            }
        }
        for dir in [c, srv] {
            got.extend(sids(&fi.stream_end(dir, t(0))));
        }
        got.sort_unstable();
        got
    };
    // SMTP: after `220` the hello and the certificate are read, the encrypted data is not.
    let mut smtp = session(
        b"220 mail.example ESMTP\r\n",
        b"STARTTLS\r\n",
        b"220 2.0.0 Ready to start TLS\r\n",
    );
    tls(&mut smtp);
    // FTP: `AUTH TLS`, `234`.
    let mut ftp: Turns = vec![
        (srv, b"220 FTP server ready\r\n".to_vec()),
        (c, b"AUTH TLS\r\n".to_vec()),
        (srv, b"234 AUTH TLS successful\r\n".to_vec()),
    ];
    tls(&mut ftp);
    // Refused (`454`): the session goes on in clear, and the secret is seen.
    let mut refused = session(
        b"220 mail.example ESMTP\r\n",
        b"STARTTLS\r\n",
        b"454 TLS not available\r\n",
    );
    refused.push((c, b"MAIL FROM:<a@b> SECRET-WORD\r\n".to_vec()));
    // A `220` that answers no STARTTLS (the greeting; a multi-line reply's first line)
    // switches nothing.
    let mut unasked = session(
        b"220-mail.example\r\n220 ESMTP\r\n",
        b"NOOP\r\n",
        b"220 ok\r\n",
    );
    unasked.push((c, b"DATA SECRET-WORD\r\n".to_vec()));
    for piece in [usize::MAX, 7, 1] {
        assert_eq!(run(&smtp, piece), [1, 2, 4], "smtp, pieces of {piece}");
        assert_eq!(run(&ftp, piece), [1, 2, 5], "ftp, pieces of {piece}");
        assert_eq!(run(&refused, piece), [3, 4], "refused, pieces of {piece}");
        assert_eq!(run(&unasked, piece), [3], "unasked, pieces of {piece}");
    }
    // The go-ahead and the server's first TLS bytes in one read (a client that sent its
    // hello before the answer): split where TLS starts. The hello came before the switch and
    // was not read as one; the certificate after it is, and the server's encrypted data is
    // not inspected.
    let mut fi = FlowInspector::new(e.clone(), flow());
    let mut got = Vec::new();
    for (dir, bytes) in &smtp[..3] {
        got.extend(sids(&fi.stream(*dir, bytes, t(0))));
    }
    got.extend(sids(&fi.stream(
        c,
        &[&b"STARTTLS\r\n"[..], &client_hello("mail.example")].concat(),
        t(0),
    )));
    let reply = [&b"220 go ahead\r\n"[..], &flight, &secret].concat();
    got.extend(sids(&fi.stream(srv, &reply, t(0))));
    got.extend(sids(&fi.stream_end(srv, t(0))));
    got.sort_unstable();
    assert_eq!(got, [2, 4]);
}

#[test]
fn request_file_data_is_each_uploaded_file() {
    let e = engine(concat!(
        "alert http any any -> any any (msg:\"php\"; flow:to_server; file.data; content:\"<?php\"; sid:1;)\n",
        "alert http any any -> any any (msg:\"gif\"; flow:to_server; file.data; content:\"GIF89a\"; startswith; sid:2;)\n",
        "alert http any any -> any any (msg:\"body\"; flow:to_server; http.request_body; content:\"<?php\"; sid:3;)\n",
        "alert http any any -> any any (msg:\"end\"; flow:to_server; file.data; content:\"END\"; endswith; sid:4;)\n",
        "alert http any any -> any any (msg:\"lower\"; flow:to_server; file.data; to_lowercase; content:\"shell_exec\"; sid:5;)\n",
    ));
    let form = |parts: &[(&str, &str)]| {
        let mut b = String::new();
        for (disposition, content) in parts {
            b.push_str(&format!(
                "--XyZ\r\nContent-Disposition: form-data; {disposition}\r\n\r\n{content}\r\n"
            ));
        }
        b.push_str("--XyZ--\r\n");
        b.into_bytes()
    };
    let multipart: &[(&str, &[u8])] = &[("content-type", b"multipart/form-data; boundary=XyZ")];
    let urlencoded: &[(&str, &[u8])] = &[("content-type", b"application/x-www-form-urlencoded")];
    let run = |method: &'static str, headers: &[(&str, &[u8])], body: &[u8], piece: usize| {
        let mut fi = FlowInspector::new(e.clone(), flow());
        fi.set_app_proto(AppProto::Http1);
        let req = HttpRequest {
            method,
            ..get("/upload", headers)
        };
        let mut got = sids(&fi.http_request(&req, t(0)));
        for p in body.chunks(piece) {
            got.extend(sids(&fi.http_request_body(p, false, t(0))));
        }
        got.extend(sids(&fi.http_request_body(b"", true, t(0))));
        got.sort_unstable();
        got
    };
    let uploads = form(&[
        ("name=\"comment\"", "not a file: <?php"),
        ("name=\"a\"; filename=\"a.txt\"", "plain text END"),
        ("name=\"b\"; filename=\"b.gif\"", "GIF89a <?php SHELL_EXEC"),
    ]);
    let fields = form(&[("name=\"comment\"", "GIF89a <?php END")]);
    for piece in [usize::MAX, 9, 1] {
        // Each file on its own: `startswith` at the second file's start, `endswith` at the
        // first file's end; the body rule sees the whole body.
        assert_eq!(
            run("POST", multipart, &uploads, piece),
            [1, 2, 3, 4, 5],
            "{piece}"
        );
        // A form field is no file.
        assert_eq!(run("POST", multipart, &fields, piece), [3], "{piece}");
        // Any other POST's body, and a PUT's, is one file (Suricata names it after the URI).
        assert_eq!(
            run("POST", urlencoded, b"x=<?php", piece),
            [1, 3],
            "{piece}"
        );
        assert_eq!(
            run("PUT", &[], b"GIF89a <?php END", piece),
            [1, 2, 3, 4],
            "{piece}"
        );
        // Other methods upload no files.
        assert_eq!(run("PATCH", urlencoded, b"x=<?php", piece), [3], "{piece}");
    }
}
