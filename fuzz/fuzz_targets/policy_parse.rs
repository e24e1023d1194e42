//! Arbitrary bytes into `Policy::parse` (with a real registry for the warning paths) and,
//! when a policy compiles, a few decisions: nothing may panic.
#![no_main]

use std::net::IpAddr;
use std::sync::OnceLock;

use eastwall_policy::{Endpoint, Flow, Policy, Registry, SpiffeId};
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
    let addrs: [IpAddr; 4] = [
        IpAddr::from([10, 99, 1, 2]),
        IpAddr::from([10, 99, 2, 3]),
        IpAddr::from([10, 200, 1, 1]),
        "fd00:99::1:3".parse().unwrap_or(IpAddr::from([0u8; 16])),
    ];
    // Proven identities: none, each workload's own, and one outside the registry.
    let stranger = SpiffeId::parse("spiffe://other.example/wl/x").ok();
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
                let flow = Flow {
                    src: Endpoint::lookup(registry, src).with_identity(src_id),
                    dst: Endpoint::lookup(registry, dst).with_identity(dst_id),
                    dst_port: port,
                };
                let _ = policy.decide(&flow);
            }
        }
    }
});
