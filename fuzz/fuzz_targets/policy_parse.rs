//! Arbitrary bytes into `Policy::parse` (with a real registry for the warning paths) and,
//! when a policy compiles, decisions and explanations at connection time and with L7 facts
//! (opaque, TLS with and without SNI, HTTP requests): nothing may panic, `explain` must
//! agree with `decide`, and `needs_l7` appears only at connection time.
#![no_main]

use std::net::IpAddr;
use std::sync::OnceLock;

use eastwall_policy::{Endpoint, Flow, HttpRequestFacts, L7, Policy, Registry, SpiffeId};
use libfuzzer_sys::fuzz_target;

const REGISTRY: &str = include_str!("../../policy/testdata/registry.yaml");

static PARSED: OnceLock<Registry> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let registry = PARSED.get_or_init(|| {
        Registry::parse("registry.yaml", REGISTRY).unwrap_or_else(|_| Registry::empty())
    });
    let _ = eastwall_policy::document_kind("fuzz.yaml", text);
    let Ok((policy, _warnings)) = Policy::parse("fuzz.yaml", text, registry) else {
        return;
    };
    let _ = policy.ids_profiles();
    let addrs: [IpAddr; 4] = [
        IpAddr::from([10, 99, 1, 2]),
        IpAddr::from([10, 99, 2, 3]),
        IpAddr::from([10, 200, 1, 1]),
        "fd00:99::1:3".parse().unwrap_or(IpAddr::from([0u8; 16])),
    ];
    let mut headers = http::HeaderMap::new();
    headers.insert("x-env", http::HeaderValue::from_static("prod"));
    // Request facts from the end of the input, so the fuzzer can steer them.
    let tail = text.get(text.len().saturating_sub(24)..).unwrap_or("");
    let path = eastwall_policy::normalize_path(tail).unwrap_or_else(|_| "/api/x".to_owned());
    let requests = [
        HttpRequestFacts { method: "GET", host: Some("a.example"), path: "/api/v1/x", headers: &headers },
        HttpRequestFacts { method: "DELETE", host: None, path: &path, headers: &headers },
    ];
    let l7s = [
        L7::Unknown,
        L7::Opaque,
        L7::Tls { sni: Some("a.corp.example") },
        L7::Tls { sni: None },
        L7::Http(&requests[0]),
        L7::Http(&requests[1]),
    ];
    // Proven identities: none, each workload's own, and one outside the registry.
    let stranger = SpiffeId::parse("spiffe://other.example/wl/x").ok();
    let groups = vec!["finance".to_owned()];
    for (i, &src) in addrs.iter().enumerate() {
        for &dst in &addrs {
            let port = data.get(i).map_or(80, |&b| u16::from(b) * 257);
            let src_wl = registry.workload_by_addr(src);
            let dst_wl = registry.workload_by_addr(dst);
            for (src_id, dst_id) in [
                (None, None),
                (src_wl.map(|w| &w.identity), dst_wl.map(|w| &w.identity)),
                (stranger.as_ref(), None),
            ] {
                for (n, l7) in l7s.iter().enumerate() {
                    let user = match n % 3 {
                        0 => (None, None),
                        1 => (Some("alice"), Some(&groups[..])),
                        _ => (Some("carol"), None),
                    };
                    let flow = Flow::new(
                        Endpoint::lookup(registry, src)
                            .with_identity(src_id)
                            .with_user(user.0, user.1),
                        Endpoint::lookup(registry, dst).with_identity(dst_id),
                        port,
                    )
                    .with_l7(*l7);
                    let d = policy.decide(&flow);
                    assert!(!d.needs_l7 || matches!(l7, L7::Unknown));
                    let e = policy.explain(&flow);
                    assert_eq!(e.decision, d);
                    let _ = e.to_string();
                }
            }
        }
    }
});
