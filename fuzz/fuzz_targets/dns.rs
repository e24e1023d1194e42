//! The DNS message reader on arbitrary bytes: never panics, and a REFUSED answer built for
//! any message it reads reads back as a response to the same id and name.
#![no_main]

use eastwall_wire::dns::{parse, refused};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = parse(data) {
        let r = refused(data, &m);
        let back = parse(&r).expect("a REFUSED answer reads back");
        assert!(back.header.response);
        assert_eq!(back.header.rcode, 5);
        assert_eq!(back.header.id, m.header.id);
        assert_eq!(back.name, m.name);
        assert_eq!(back.qtype, m.qtype);
    }
});
