//! Emerging Threats Open: how much of it loads. The snapshot is test data outside the
//! repository: `EASTWALL_ET_OPEN` (default `/work/shared/ids/et-open`).

use eastwall_ids::{Classifications, Vars, check};
use std::path::PathBuf;

fn et_open() -> Option<Vec<(String, String)>> {
    let dir = PathBuf::from(
        std::env::var("EASTWALL_ET_OPEN").unwrap_or_else(|_| "/work/shared/ids/et-open".into()),
    );
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!(
            "ET Open snapshot not found at {} (set EASTWALL_ET_OPEN): test skipped",
            dir.display()
        );
        return None;
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "rules"))
        .collect();
    files.sort();
    Some(
        files
            .iter()
            .map(|p| {
                (
                    p.file_name()
                        .expect("file name")
                        .to_string_lossy()
                        .into_owned(),
                    std::fs::read_to_string(p).expect("readable rules file"),
                )
            })
            .collect(),
    )
}

#[test]
fn et_open_support_share() {
    let Some(files) = et_open() else { return };
    let sources: Vec<(&str, &str)> = files
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let report = check(
        &sources,
        &Vars::east_west(),
        &Classifications::suricata_defaults(),
    );
    println!("{report}");
    assert!(report.total() > 20_000, "{} rules", report.total());
    assert!(
        report.errors.is_empty(),
        "{:?}",
        &report.errors[..report.errors.len().min(5)]
    );
    assert!(
        report.loaded_percent() >= 90.0,
        "{:.1}% loaded",
        report.loaded_percent()
    );
}
