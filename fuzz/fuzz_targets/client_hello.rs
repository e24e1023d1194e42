//! The TLS ClientHello parser on arbitrary bytes: as records from the wire, and framed as the
//! body of one well-formed record so that the fuzzer reaches the extension parsers at once.
//! Never panics; what it returns keeps the parser's promises.
#![no_main]

use libfuzzer_sys::fuzz_target;

use eastwall_wire::sniff::{ClientHello, MAX_CLIENT_HELLO, MAX_SNIFF, parse_client_hello};

fn check(hello: &ClientHello) {
    if let Some(sni) = &hello.sni {
        assert!(!sni.is_empty() && sni.len() <= 253);
        assert!(sni.bytes().all(|b| b.is_ascii_lowercase()
            || b.is_ascii_digit()
            || b"-_.".contains(&b)));
    }
    assert!(hello.alpn.iter().all(|p| !p.is_empty() && p.is_ascii()));
    let mut kinds = hello.extensions.clone();
    kinds.sort_unstable();
    kinds.dedup();
    assert_eq!(kinds.len(), hello.extensions.len(), "duplicate extension accepted");
}

fuzz_target!(|data: &[u8]| {
    match parse_client_hello(data) {
        Ok(Some(hello)) => check(&hello),
        Ok(None) => assert!(data.len() < MAX_SNIFF, "undecided after {} bytes", data.len()),
        Err(_) => {}
    }

    if data.len() + 4 <= MAX_CLIENT_HELLO {
        let mut framed = vec![22, 3, 1];
        framed.extend_from_slice(&((data.len() + 4) as u16).to_be_bytes());
        framed.push(1);
        framed.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
        framed.extend_from_slice(data);
        match parse_client_hello(&framed) {
            Ok(Some(hello)) => check(&hello),
            Ok(None) => panic!("a whole ClientHello message was not decided"),
            Err(_) => {}
        }
    }
});
