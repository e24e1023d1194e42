//! Arbitrary bytes into `Registry::parse` and its lookups: nothing may panic.
#![no_main]

use eastwall_policy::Registry;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(reg) = Registry::parse("fuzz.yaml", text) {
        let _ = reg.trust_domain();
        for w in reg.workloads() {
            assert!(reg.workloads_by_identity(&w.identity).any(|x| x.name == w.name));
            assert!(reg.node_by_identity(&w.identity).is_none());
            for &a in &w.addresses {
                let _ = reg.workload_by_addr(a);
            }
            let _ = reg.workload(&w.name);
            let _ = reg.workloads_on(&w.node).count();
        }
        for n in reg.nodes() {
            let _ = reg.node(&n.name);
            assert_eq!(reg.node_by_identity(&n.identity).map(|x| &x.name), Some(&n.name));
        }
    }
});
