//! Arbitrary text as a trust bundle file (a SPIFFE bundle in JSON, or PEM): an error or a
//! bundle of the trust domain asked for, never a panic.
#![no_main]

use eastwall_certs::TrustBundle;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(bundle) = TrustBundle::read(text, "corp.example") {
        assert_eq!(bundle.trust_domain(), "corp.example");
    }
});
