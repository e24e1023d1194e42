//! The tunnel's stream header and response decoders on arbitrary bytes: never panic, and a
//! decoded header re-encodes to bytes that decode to the same header.
#![no_main]

use libfuzzer_sys::fuzz_target;

use eastwall_wire::header::{Decoded, Response, StreamHeader};

fuzz_target!(|data: &[u8]| {
    if let Ok(Decoded::Done(h, used)) = StreamHeader::decode(data) {
        assert!(used <= data.len());
        let again = h.encode();
        match StreamHeader::decode(&again) {
            Ok(Decoded::Done(h2, n)) => {
                assert_eq!(n, again.len());
                // Optional unknown fields are dropped on re-encoding; what is known survives.
                assert_eq!(h2.dst, h.dst);
                assert_eq!(h2.src, h.src);
            }
            other => panic!("re-encoded header does not decode: {other:?}"),
        }
    }
    if let Ok(Decoded::Done(r, used)) = Response::decode(data) {
        assert!(used <= data.len());
        let _ = r.encode();
    }
});
