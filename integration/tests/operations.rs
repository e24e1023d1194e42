//! Running a node as a platform team does: its admin endpoint off loopback behind a token,
//! Prometheus on a listener of its own. Run as root; every test builds its own namespaces.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use eastwall_integration::{Cloud, require_root};

const POLICY: &str = r#"apiVersion: eastwall.dev/v1
kind: Policy
spec:
  sections:
    - name: apps
      rules:
        - id: app-to-db
          action: allow
          from: {app: app}
          to: {app: db}
          ports: [5432]
"#;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// hostA: app; hostB: db (listening on 5432).
fn cloud() -> Cloud {
    require_root();
    let mut c = Cloud::new(
        &["hostA", "hostB"],
        &[
            ("hostA", "app", "app", "prod"),
            ("hostB", "db", "db", "prod"),
        ],
        "",
        POLICY,
    );
    c.lab.serve("db", &[5432]).unwrap();
    c
}

/// `GET path` with `headers` from hostB's namespace to `addr`: the status line and body.
fn get(c: &Cloud, addr: SocketAddr, path: &str, headers: &str) -> (String, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: n\r\n{headers}Connection: close\r\n\r\n");
    let ns = c.lab.host("hostB").netns.clone();
    eastwall_lab::in_netns(&ns, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let (head, body) = resp.split_once("\r\n\r\n").unwrap();
        (head.lines().next().unwrap().to_owned(), body.to_owned())
    })
    .unwrap()
}

#[test]
fn the_admin_endpoint_off_loopback_wants_its_token_and_prometheus_has_its_own_listener() {
    let mut c = cloud();
    c.lab.set_node_admin_token(TOKEN);
    c.start_nodes("");
    assert!(c.connect("app", "db", 5432).outcome.reached());
    let host_a = c.lab.host("hostA").addr;
    let admin = SocketAddr::new(host_a.into(), 15000);
    // From another host: no token, a wrong one, another scheme: refused, nothing served.
    for headers in [
        String::new(),
        "Authorization: Bearer 0123456789abcdef0123456789abcdeX\r\n".to_owned(),
        format!("Authorization: Basic {TOKEN}\r\n"),
    ] {
        for path in ["/flows", "/metrics", "/healthz"] {
            let (status, body) = get(&c, admin, path, &headers);
            assert!(
                status.starts_with("HTTP/1.1 401"),
                "{path} {headers}: {status}"
            );
            assert!(
                !body.contains("flow_id") && !body.contains("eastwall_"),
                "{body}"
            );
        }
    }
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    let (status, flows) = get(&c, admin, "/flows", &auth);
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(flows.contains("\"flow_id\""), "{flows}");
    // The metrics listener: no token, metrics and probes only.
    let metrics = SocketAddr::new(host_a.into(), 15020);
    let (status, body) = get(&c, metrics, "/metrics", "");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(body.contains("eastwall_connections_opened_total"), "{body}");
    eastwall_integration::promtool_check_metrics(&body);
    // Prometheus asks for OpenMetrics and gets it.
    let (_, om) = get(
        &c,
        metrics,
        "/metrics",
        "Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n",
    );
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert_eq!(get(&c, metrics, "/healthz", "").1, "ok\n");
    assert_eq!(get(&c, metrics, "/livez", "").1, "alive\n");
    let (status, body) = get(&c, metrics, "/flows", "");
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
    assert!(!body.contains("flow_id"), "{body}");
}
