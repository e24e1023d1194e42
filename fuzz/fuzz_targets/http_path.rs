//! Arbitrary request targets into `normalize_path`, the function the node calls on every
//! HTTP request: nothing may panic, and a normalized path is canonical (ASCII, starts with
//! `/`, no `//`, no dot segments, normalizes to itself).
#![no_main]

use eastwall_policy::normalize_path;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(target) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(path) = normalize_path(target) else {
        return;
    };
    if path == "*" {
        return;
    }
    assert!(path.is_ascii(), "{target:?} -> {path:?}");
    assert!(path.starts_with('/'), "{target:?} -> {path:?}");
    assert!(!path.contains("//"), "{target:?} -> {path:?}");
    assert!(!path.contains(['?', '#', ' ', '\0']), "{target:?} -> {path:?}");
    assert!(
        !path.split('/').any(|s| s == "." || s == ".."),
        "{target:?} -> {path:?}"
    );
    assert_eq!(normalize_path(&path).as_deref(), Ok(path.as_str()), "{target:?}");
});
