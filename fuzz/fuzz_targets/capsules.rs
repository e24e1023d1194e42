//! The capsule reader on arbitrary bytes fed in arbitrary pieces: never panics, reads the same
//! datagrams whatever the pieces, and datagrams written as capsules come back unchanged.
#![no_main]

use eastwall_wire::capsule::{CapsuleReader, put_datagram};
use libfuzzer_sys::fuzz_target;

fn read_all(data: &[u8], piece: usize) -> Result<Vec<Vec<u8>>, ()> {
    let mut r = CapsuleReader::new();
    let mut out = Vec::new();
    for chunk in data.chunks(piece.max(1)) {
        r.push(chunk);
        loop {
            match r.next_datagram() {
                Ok(Some(d)) => out.push(d.to_vec()),
                Ok(None) => break,
                Err(_) => return Err(()),
            }
        }
    }
    Ok(out)
}

fuzz_target!(|data: &[u8]| {
    let whole = read_all(data, data.len());
    for piece in [1, 3, 17] {
        assert_eq!(read_all(data, piece), whole, "pieces of {piece}");
    }
    // The input's bytes as datagrams, split at its zero bytes, survive a round trip.
    let datagrams: Vec<&[u8]> = data.split(|b| *b == 0).collect();
    let mut stream = bytes::BytesMut::new();
    for d in &datagrams {
        put_datagram(&mut stream, d);
    }
    let back = read_all(&stream, 7).expect("well-formed capsules");
    assert_eq!(back.len(), datagrams.len());
    for (a, b) in back.iter().zip(&datagrams) {
        assert_eq!(a.as_slice(), *b);
    }
});
