//! Flow records from the network or from files (the collector's ingest, `policy replay` and
//! `recommend`, `observe`): read back as observations and as columns, and the times in
//! them. Never a panic, whatever the bytes.
#![no_main]

use eastwall_flows::Observations;
use eastwall_flows::record::{row_of, unix_micros};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut o = Observations::default();
    o.read("fuzz", &text);
    o.read("fuzz-again", &text);
    for line in text.lines() {
        let _ = unix_micros(line);
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
            let _ = row_of(&v);
        }
    }
});
