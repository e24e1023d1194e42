//! The protocol sniffer on arbitrary first bytes: never panics, always decides within
//! `MAX_SNIFF` bytes, a decision on a prefix is the decision on the whole input, and a
//! `Sniffer` fed the bytes in pieces answers as `sniff` does at every step.
#![no_main]

use libfuzzer_sys::fuzz_target;

use eastwall_wire::sniff::{MAX_SNIFF, Sniff, Sniffer, sniff, sniff_final};

fuzz_target!(|data: &[u8]| {
    let whole = sniff(data);
    if data.len() >= MAX_SNIFF {
        assert_ne!(whole, Sniff::NeedMore, "undecided after {} bytes", data.len());
    }
    // Every cut of a short input, a few of a long one (all cuts would be quadratic).
    let cuts: Vec<usize> = if data.len() <= 512 {
        (0..data.len()).collect()
    } else {
        vec![1, 2, 3, 5, 8, 24, 100, data.len() / 2, data.len() - 1]
    };
    let mut sniffer = Sniffer::new();
    for cut in cuts {
        let at_cut = sniff(&data[..cut]);
        assert_eq!(sniffer.sniff(&data[..cut]), at_cut, "Sniffer differs at {cut} bytes");
        if let Sniff::Done(_) = at_cut {
            assert_eq!(at_cut, whole, "prefix of {cut} bytes decided otherwise");
        }
    }
    assert_eq!(sniffer.sniff(data), whole);
    let last = sniff_final(data);
    if let Sniff::Done(decided) = whole {
        assert_eq!(last, decided);
    }
});
