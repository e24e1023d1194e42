//! Arbitrary rules text through the IDS rule parser, the engine build and the check report.
#![no_main]

use eastwall_ids::{Classifications, Engine, Selection, Vars, check, parse_rules};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = parse_rules("fuzz.rules", text);
    for e in &parsed.errors {
        // Errors point inside the text.
        assert!(e.line >= 1 && e.col >= 1);
        let _ = e.to_string();
    }
    let (engine, _) = Engine::build(
        &parsed.rules,
        &Vars::east_west(),
        &Classifications::suricata_defaults(),
        &Selection::all(),
    );
    assert!(engine.rule_count() <= parsed.rules.len());
    let _ = check(&[("fuzz.rules", text)], &Vars::suricata_defaults(), &Classifications::suricata_defaults()).to_string();
    let _ = Classifications::parse("fuzz.config", text);
    let mut vars = Vars::suricata_defaults();
    if let Some((name, value)) = text.split_once('=') {
        let _ = vars.set(name, value);
    }
});
