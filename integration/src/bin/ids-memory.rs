//! The IDS engine's memory for a rule set, as the node holds it: the process's resident
//! memory after parsing the rules, building the engine (once, shared by every profile) and
//! dropping the parsed rules, against the resident memory before; and the profiles'
//! selections on top. With the allocator the `eastwall` binary runs with (jemalloc).
//!
//! `target/release/ids-memory RULES_DIR [PROFILES]`; it prints its own peak resident memory
//! too (what `/usr/bin/time -v` reports as maximum resident). Suricata's on the same rules:
//! `/usr/bin/time -v suricata -r EMPTY.pcap -S RULES …` (maximum resident set size).
#![allow(clippy::unwrap_used)]

use eastwall_ids::{Classifications, Engine, Selection, Vars, parse_rules};

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn rss_mib() -> f64 {
    eastwall_integration::rss(std::process::id()).unwrap_or(0) as f64 / (1 << 20) as f64
}

/// The process's peak resident memory so far: what reading the rules and building the
/// engine cost at most, transients included.
fn peak_mib() -> f64 {
    eastwall_integration::peak_rss(std::process::id()).unwrap_or(0) as f64 / (1 << 20) as f64
}

/// Bytes the allocator holds for live allocations (exact, unlike the resident memory, which
/// keeps freed pages).
fn live_mib() -> f64 {
    let _ = tikv_jemalloc_ctl::epoch::advance();
    tikv_jemalloc_ctl::stats::allocated::read().unwrap_or(0) as f64 / (1 << 20) as f64
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: ids-memory RULES_DIR [PROFILES]");
    let profiles: usize = args.next().and_then(|p| p.parse().ok()).unwrap_or(2);
    let (before, live_before) = (rss_mib(), live_mib());
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "rules"))
        .collect();
    files.sort();
    let mut rules = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        rules.extend(parse_rules(&f.display().to_string(), &text).rules);
    }
    let t = std::time::Instant::now();
    let (engine, _) = Engine::build(
        &rules,
        &Vars::east_west(),
        &Classifications::suricata_defaults(),
        &Selection::all(),
    );
    let built = t.elapsed();
    let parsed = rules.len();
    drop(rules);
    let engine = std::sync::Arc::new(engine);
    let masks: Vec<_> = (0..profiles)
        .map(|i| {
            engine.select(&Selection {
                max_severity: Some(if i % 2 == 0 { 4 } else { 2 }),
                ..Selection::default()
            })
        })
        .collect();
    let held = rss_mib() - before;
    let hyperscan = engine.hyperscan_bytes() as f64 / (1 << 20) as f64;
    // Hyperscan allocates its databases itself: added to what jemalloc counts.
    let live = live_mib() - live_before + hyperscan;
    println!(
        "{parsed} rules parsed; engine of {} rules built in {:.1} s; with {} profile selections ({} and {} rules): {live:.0} MiB live (Hyperscan {hyperscan:.0} MiB of it), {held:.0} MiB more resident; peak resident of the process {:.0} MiB",
        engine.rule_count(),
        built.as_secs_f64(),
        masks.len(),
        masks.first().map_or(0, |m| m.rule_count()),
        masks.get(1).map_or(0, |m| m.rule_count()),
        peak_mib(),
    );
}
