//! The IP packet reader on arbitrary bytes: never panics, and what it reads is consistent
//! (ports only for protocols with ports, ICMP facts only for ICMP).
#![no_main]

use eastwall_wire::packet::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = parse(data) {
        if f.ports.is_some() {
            assert!([6, 17, 132, 136].contains(&f.protocol));
        }
        if f.icmp.is_some() {
            assert!(f.protocol == 1 || f.protocol == 58);
        }
    }
});
