//! `cargo run -p eastwall-ids --example check -- FILE_OR_DIR…`: the report that
//! `eastwall ids check` prints, with east-west variables (`HOME_NET` and `EXTERNAL_NET` both
//! `any`) and Suricata's classification table (or `classification.config` found beside the
//! rules).

use eastwall_ids::{Classifications, Vars, check};
use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let mut files: Vec<PathBuf> = Vec::new();
    let mut classes = Classifications::suricata_defaults();
    for arg in std::env::args().skip(1) {
        let path = PathBuf::from(arg);
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&path)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "rules"))
                .collect();
            entries.sort();
            files.extend(entries);
            let config = path.join("classification.config");
            if config.exists() {
                let (c, errors) = Classifications::parse(
                    "classification.config",
                    &std::fs::read_to_string(config)?,
                );
                for e in errors {
                    eprintln!("{e}");
                }
                classes = c;
            }
        } else {
            files.push(path);
        }
    }
    let texts: Vec<(String, String)> = files
        .iter()
        .map(|p| {
            let name = p
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            std::fs::read_to_string(p).map(|t| (name, t))
        })
        .collect::<Result<_, _>>()?;
    let sources: Vec<(&str, &str)> = texts
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let report = check(&sources, &Vars::east_west(), &classes);
    print!("{report}");
    if std::env::var_os("EASTWALL_IDS_LAYOUT").is_some() {
        let mut rules = Vec::new();
        for (name, text) in &sources {
            rules.extend(eastwall_ids::parse_rules(name, text).rules);
        }
        let (engine, _) = eastwall_ids::Engine::build(
            &rules,
            &Vars::east_west(),
            &classes,
            &eastwall_ids::Selection::all(),
        );
        print!("\nengine layout:\n{}", engine.layout());
    }
    Ok(())
}
