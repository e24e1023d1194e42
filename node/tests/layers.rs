//! The shape of the code: the node's top-level modules import only modules of lower layers,
//! as the table in `docs/ARCHITECTURE.md` (under "Layers") says, and no crate of the
//! workspace has an import cycle among its top-level modules. An edge is any `crate::<module>`
//! path outside comments and test modules, `use crate::{...}` groups included.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The marker the layer table follows in `docs/ARCHITECTURE.md`.
const MARKER: &str = "<!-- layers: checked by node/tests/layers.rs -->";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the node crate sits in the workspace")
        .to_path_buf()
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("readable source folder") {
        let p = e.expect("folder entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file as the checks see it: up to its test module, without comments.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules `code` names through `crate::`.
fn crate_refs(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a::X, b}`: the first segment of each top-level item of the group.
            let (mut depth, mut item) = (0usize, String::new());
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(ident(item.trim()));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            out.insert(ident(item.trim()));
        } else {
            out.insert(ident(rest));
        }
    }
    out.remove("");
    out
}

/// Edges between the top-level modules of the crate whose sources are in `src`.
fn edges(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut modules: BTreeSet<String> = BTreeSet::new();
    for e in std::fs::read_dir(src).expect("src") {
        let p = e.expect("entry").path();
        let name = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        if p.is_dir()
            || (p.extension().is_some_and(|x| x == "rs") && !["lib", "main"].contains(&name))
        {
            modules.insert(name.to_owned());
        }
    }
    let mut out: BTreeMap<String, BTreeSet<String>> = modules
        .iter()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    for f in files {
        let rel = f.strip_prefix(src).expect("under src");
        let first = rel.components().next().expect("a path");
        let first = first.as_os_str().to_string_lossy();
        let module = first.strip_suffix(".rs").unwrap_or(&first).to_owned();
        if !modules.contains(&module) {
            continue;
        }
        let text = std::fs::read_to_string(&f).expect("readable source");
        for to in crate_refs(&code(&text)) {
            if to != module && modules.contains(&to) {
                out.entry(module.clone()).or_default().insert(to);
            }
        }
    }
    out
}

/// One import cycle among `edges`, if there is one.
fn cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        m: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(m.to_owned(), 1);
        path.push(m.to_owned());
        for n in edges.get(m).into_iter().flatten() {
            match state.get(n.as_str()) {
                Some(1) => {
                    let start = path.iter().position(|p| p == n).unwrap_or(0);
                    let mut c = path[start..].to_vec();
                    c.push(n.clone());
                    return Some(c);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(n, edges, state, path) {
                        return Some(c);
                    }
                }
            }
        }
        path.pop();
        state.insert(m.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in edges.keys() {
        if !state.contains_key(m)
            && let Some(c) = visit(m, edges, &mut state, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

/// The layer of each node module, from the table in `docs/ARCHITECTURE.md`.
fn layer_table() -> BTreeMap<String, u32> {
    let doc = std::fs::read_to_string(workspace().join("docs/ARCHITECTURE.md"))
        .expect("docs/ARCHITECTURE.md");
    let table = doc
        .split(MARKER)
        .nth(1)
        .expect("ARCHITECTURE.md has the layer table after its marker");
    let mut layers = BTreeMap::new();
    for row in table.lines().skip_while(|l| !l.starts_with('|')) {
        if !row.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        let Some(Ok(layer)) = cells.first().map(|c| c.parse::<u32>()) else {
            continue;
        };
        for m in cells.get(1).copied().unwrap_or_default().split(',') {
            let m = m.trim().trim_matches('`');
            if !m.is_empty() {
                layers.insert(m.to_owned(), layer);
            }
        }
    }
    layers
}

#[test]
fn node_modules_import_only_lower_layers() {
    let layers = layer_table();
    let edges = edges(&workspace().join("node/src"));
    let mut wrong = Vec::new();
    for (from, tos) in &edges {
        let Some(&lf) = layers.get(from) else {
            wrong.push(format!("module `{from}` has no layer in the table"));
            continue;
        };
        for to in tos {
            match layers.get(to) {
                Some(&lt) if lt < lf => {}
                Some(&lt) => wrong.push(format!(
                    "`{from}` (layer {lf}) imports `{to}` (layer {lt}): only lower layers"
                )),
                None => wrong.push(format!("module `{to}` has no layer in the table")),
            }
        }
    }
    for m in layers.keys() {
        if !edges.contains_key(m) {
            wrong.push(format!(
                "the table names `{m}`, which is not a module of node/src"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn no_crate_has_an_import_cycle() {
    let root = workspace();
    let crates = [
        "node",
        "policy",
        "ids",
        "identity",
        "certs",
        "wire",
        "lab",
        "integration",
    ];
    for c in crates {
        let e = edges(&root.join(c).join("src"));
        assert!(cycle(&e).is_none(), "{c}: {:?}", cycle(&e));
    }
}

#[test]
fn the_checks_see_what_they_should() {
    let code = code(
        "use crate::a::X;\n// crate::commented\nuse crate::{b::{Y, Z}, c};\nfn f() { crate::d::g(); }\n#[cfg(test)]\nmod tests { use crate::e; }",
    );
    let refs: Vec<String> = crate_refs(&code).into_iter().collect();
    assert_eq!(refs, ["a", "b", "c", "d"]);
    let mut e: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    e.entry("a".into()).or_default().insert("b".into());
    e.entry("b".into()).or_default().insert("c".into());
    e.entry("c".into()).or_default();
    assert_eq!(cycle(&e), None);
    e.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        cycle(&e),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}
