//! A fixed small rule set, and arbitrary stream bytes fed in arbitrary splits and directions,
//! plus HTTP, TLS and DNS inputs made from the same bytes, and the same messages as UDP
//! datagrams (DNS on port 53 included), and as a body labelled compressed. Unnamed TCP flows
//! are read for a ClientHello (and their fingerprints), TLS flows for the server's hello and
//! certificates, SMTP flows for mail attachments. Nothing may panic, and feeding the same
//! stream, body or mail bytes whole must give the same alerts as the split feed.
#![no_main]

use eastwall_ids::{
    AppProto, Classifications, Dir, Engine, FlowInspector, FlowMeta, HttpRequest, HttpResponse,
    HttpVersion, Selection, Timestamp, Transport, Vars, parse_rules,
};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};

const RULES: &str = r#"
alert tcp any any -> any any (msg:"a"; content:"USER "; depth:5; content:"admin"; distance:0; within:10; sid:1;)
alert tcp any any -> any any (msg:"b"; content:"PASS"; content:!"secret"; distance:0; sid:2;)
alert tcp any any -> any any (msg:"c"; pcre:"/cmd=[a-z]+&/i"; sid:3;)
alert tcp any any -> any any (msg:"d"; content:"x"; isdataat:3,relative; byte_test:1,>,0x30,0,relative; sid:4;)
alert tcp any any -> any any (msg:"e"; content:"J"; byte_jump:1,0,relative,string,dec; content:"Z"; within:1; sid:5;)
alert tcp any any -> any any (msg:"f"; content:"LOGIN"; flowbits:set,l; flowbits:noalert; sid:6;)
alert tcp any any -> any any (msg:"g"; content:"OK"; flowbits:isset,l; sid:7;)
alert tcp any any -> any any (msg:"h"; dsize:<16; content:"ping"; sid:8;)
alert tcp any any -> any any (msg:"i"; content:"logout"; flowbits:unset,l; sid:9;)
alert http any any -> any any (msg:"j"; flow:to_server; http.uri; content:"/etc/passwd"; sid:10;)
alert http any any -> any any (msg:"k"; flow:to_server; http.header; content:"evil"; nocase; http.request_body; content:"x="; sid:11;)
alert http any any -> any any (msg:"l"; flow:to_client; http.stat_code; content:"200"; file.data; content:"root:"; sid:12;)
alert tls any any -> any any (msg:"m"; tls.sni; dotprefix; content:".evil"; sid:13;)
alert dns any any -> any any (msg:"n"; dns.query; content:"bad"; sid:14;)
alert udp any any -> any any (msg:"o"; content:"ping"; depth:8; dsize:<64; sid:15;)
alert udp any any -> any any (msg:"p"; flow:established,to_client; content:"x"; byte_test:1,>,0x30,0,relative; flowbits:isset,u; sid:16;)
alert udp any any -> any 53 (msg:"q"; dns.query; content:"bad"; nocase; sid:17;)
alert udp any any -> any any (msg:"r"; content:"LOGIN"; flowbits:set,u; flowbits:noalert; sid:18;)
alert ip any any -> any any (msg:"s"; content:"root"; sid:19;)
alert tls any any -> any any (msg:"t"; tls.cert_subject; content:"CN="; sid:20;)
alert tls any any -> any any (msg:"u"; tls.certs; content:"|30 82|"; pcre:"/(\x30)\1?/R"; sid:21;)
alert tcp any any -> any any (msg:"v"; content:"GET"; pcre:"/(?<=GET )(\w+)\s\1/R"; sid:22;)
alert tls any any -> any any (msg:"w"; ja3.hash; content:"a"; sid:23;)
alert tls any any -> any any (msg:"x"; ja4.hash; content:"t1"; sid:24;)
alert tls any any -> any any (msg:"y"; ja3s.string; content:"771,"; sid:25;)
alert tls any any -> any any (msg:"z"; flow:to_client; tls.version:1.2; content:"|16|"; sid:26;)
alert tcp any any -> any any (msg:"aa"; stream_size:either,>,40; content:"q"; sid:27;)
alert tcp any any -> any any (msg:"ab"; content:"b="; base64_decode:relative,bytes 64; base64_data; content:"cmd"; sid:28;)
alert tcp any any -> any any (msg:"ac"; content:"L"; byte_extract:1,0,n,relative; content:"E"; distance:n; within:1; isdataat:n,relative; sid:29;)
alert tcp any any -> any any (msg:"ad"; content:"seen"; xbits:set,s,track ip_pair,expire 5; noalert; sid:30;)
alert smtp any any -> any any (msg:"ae"; flow:to_server; file.data; content:"evil"; sid:31;)
alert smtp any any -> any any (msg:"af"; content:"MAIL"; sid:32;)
alert ftp any any -> any any (msg:"ag"; content:"RETR"; sid:33;)
alert tls any any -> any any (msg:"ah"; tls.cert_fingerprint; content:":"; sid:34;)
alert http any any -> any any (msg:"ai"; flow:to_server; http.method; content:"POST"; http.request_body; content:"cmd=exec"; sid:35;)
alert tcp any any -> any any (msg:"aj"; content:"n"; flowint:count,+,1; noalert; sid:36;)
alert tcp any any -> any any (msg:"ak"; content:"m"; flowint:count,>,limit; flowint:limit,=,count; sid:37;)
alert http any any -> any any (msg:"al"; flow:to_server; flowint:count,isset; http.uri; content:"/"; flowint:count,-,1; sid:38;)
alert http any any -> any any (msg:"am"; flow:to_server; file.data; content:"MZ"; startswith; sid:39;)
"#;

fn engine() -> Arc<Engine> {
    static E: OnceLock<Arc<Engine>> = OnceLock::new();
    E.get_or_init(|| {
        let p = parse_rules("fuzz.rules", RULES);
        assert!(p.errors.is_empty() && p.skipped.is_empty());
        let (e, _) = Engine::build(
            &p.rules,
            &Vars::east_west(),
            &Classifications::suricata_defaults(),
            &Selection::all(),
        );
        Arc::new(e)
    })
    .clone()
}

fn flow() -> FlowMeta {
    FlowMeta {
        src: "10.0.0.1:40000".parse().expect("address"),
        dst: "10.0.0.2:80".parse().expect("address"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let now = Timestamp::from_secs(1);
    // Messages: the data split at 0xff bytes, directions alternating from `control`.
    let msgs: Vec<(Dir, &[u8])> = rest
        .split(|&b| b == 0xff)
        .enumerate()
        .map(|(i, m)| {
            let to_server = (i + usize::from(control & 1)) % 2 == 0;
            (if to_server { Dir::ToServer } else { Dir::ToClient }, m)
        })
        .collect();
    let step = usize::from(control >> 1).max(1);
    let run = |split: bool| {
        let mut fi = FlowInspector::new(engine(), flow());
        let mut seen = Vec::new();
        for (dir, m) in &msgs {
            if split {
                for chunk in m.chunks(step) {
                    seen.extend(fi.stream(*dir, chunk, now).alerts.iter().map(|a| (a.sid, a.dir)));
                }
            } else {
                seen.extend(fi.stream(*dir, m, now).alerts.iter().map(|a| (a.sid, a.dir)));
            }
        }
        seen.extend(fi.close(now).alerts.iter().map(|a| (a.sid, a.dir)));
        seen.sort();
        seen
    };
    assert_eq!(run(false), run(true));

    // The same bytes as parsed HTTP, TLS and DNS inputs.
    let text = String::from_utf8_lossy(rest);
    let mut parts = text.splitn(4, '\n');
    let (method, uri, header, body) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    let mut fi = FlowInspector::new(engine(), flow());
    fi.set_app_proto(AppProto::Http1);
    let headers: Vec<(&str, &[u8])> = vec![("x-h", header.as_bytes()), (header, uri.as_bytes())];
    let req = HttpRequest {
        method,
        uri_raw: uri.as_bytes(),
        host: Some(header),
        headers: &headers,
        version: HttpVersion::Http11,
        raw_head: None,
    };
    fi.http_request(&req, now);
    for c in body.as_bytes().chunks(step) {
        fi.http_request_body(c, false, now);
    }
    let resp = HttpResponse {
        status: u16::from(control) * 3,
        reason: method,
        headers: &headers,
        version: HttpVersion::Http2,
        raw_head: None,
    };
    fi.http_response(&resp, now);
    fi.http_response_body(body.as_bytes(), true, now);
    fi.close(now);
    // The raw bytes as a request body labelled with content codings (whatever the bytes
    // really are), whole and in pieces: the same alerts.
    let coding: &[u8] = match control % 4 {
        0 => b"gzip",
        1 => b"deflate",
        2 => b"gzip, deflate",
        _ => b"x-gzip, gzip, gzip",
    };
    let labelled = [("content-encoding", coding)];
    let body_alerts = |split: bool| {
        let mut fi = FlowInspector::new(engine(), flow());
        fi.set_app_proto(AppProto::Http1);
        let req = HttpRequest {
            method: "POST",
            uri_raw: b"/",
            host: None,
            headers: &labelled,
            version: HttpVersion::Http11,
            raw_head: None,
        };
        let mut seen: Vec<(u32, Dir)> = Vec::new();
        let mut take = |v: eastwall_ids::Verdict| seen.extend(v.alerts.iter().map(|a| (a.sid, a.dir)));
        take(fi.http_request(&req, now));
        if split {
            for c in rest.chunks(step) {
                take(fi.http_request_body(c, false, now));
            }
        } else {
            take(fi.http_request_body(rest, false, now));
        }
        take(fi.http_request_body(b"", true, now));
        take(fi.close(now));
        seen.sort();
        seen
    };
    assert_eq!(body_alerts(false), body_alerts(true));

    let mut fi = FlowInspector::new(engine(), flow());
    fi.set_app_proto(AppProto::Tls);
    let hello = eastwall_wire::sniff::ClientHello {
        sni: Some(text.to_string()),
        sni_raw: Some(rest.to_vec()),
        alpn: vec![text.to_string(), uri.to_string()],
        cipher_suites: rest.chunks(2).map(|c| u16::from(c[0]) << 8 | u16::from(*c.last().unwrap_or(&0))).collect(),
        extensions: rest.iter().map(|b| u16::from(*b)).collect(),
        supported_versions: vec![u16::from(control) << 8 | 0x03],
        ..Default::default()
    };
    fi.tls_client_hello(Some(&hello), now);

    // The bytes as one mail (attachments decoded): the same alerts however it is cut.
    let mail: Vec<u8> = [&b"EHLO x\r\nDATA\r\n"[..], rest, b"\r\n.\r\n"].concat();
    let mail_alerts = |split: bool| {
        let mut fi = FlowInspector::new(engine(), flow());
        let mut seen: Vec<u32> = Vec::new();
        let chunks: Vec<&[u8]> = if split { mail.chunks(step).collect() } else { vec![&mail] };
        for c in chunks {
            seen.extend(fi.stream(Dir::ToServer, c, now).alerts.iter().map(|a| a.sid));
        }
        seen.extend(fi.close(now).alerts.iter().map(|a| a.sid));
        seen.sort();
        seen
    };
    assert_eq!(mail_alerts(false), mail_alerts(true));
    let mut fi = FlowInspector::new(engine(), flow());
    fi.set_app_proto(AppProto::Dns);
    for c in rest.chunks(step) {
        fi.stream(Dir::ToServer, c, now);
    }
    fi.close(now);

    // The same messages as datagrams of a UDP session to port 53: each datagram on its own.
    let dns = FlowMeta {
        src: "10.0.0.1:40000".parse().expect("address"),
        dst: "10.0.0.2:53".parse().expect("address"),
    };
    let mut fi = FlowInspector::new_udp(engine(), dns);
    for (dir, m) in &msgs {
        for a in fi.datagram(*dir, m, now).alerts {
            assert_eq!(a.transport, Transport::Udp);
        }
    }
    fi.close(now);
});
