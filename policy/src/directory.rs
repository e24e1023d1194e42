//! The directory file (`kind: Directory`): users and their groups written down, for the demo
//! and for sites without LDAP.
//!
//! ```yaml
//! apiVersion: eastwall.dev/v1
//! kind: Directory
//! spec:
//!   users:
//!     alice: [finance]
//!     bob: [hr]
//!   groups:
//!     finance: {memberOf: [staff]}   # every member of finance is also in staff
//! ```
//!
//! Nested groups are resolved here, once, when the file is read: the result maps each user to
//! every group they are in, which is all `eastwall_identity::StaticDirectory` needs at run time.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use crate::diag::{Diagnostics, Sink};
use crate::yaml::{self, DocumentKind, Metadata};

/// Longest user or group name accepted, in bytes.
const MAX_NAME_LEN: usize = 256;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DirectoryDoc {
    api_version: Spanned<String>,
    // Checked by `expect_kind` before the full parse.
    #[allow(dead_code)]
    kind: String,
    // Informational only, and not name-checked: directory files written before this format
    // moved here could use any metadata name, and still must load.
    #[serde(default)]
    #[allow(dead_code)]
    metadata: Option<Metadata>,
    spec: Spanned<DirectorySpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DirectorySpec {
    #[serde(default)]
    users: BTreeMap<String, Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    groups: BTreeMap<String, Spanned<GroupDoc>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct GroupDoc {
    #[serde(default)]
    member_of: Vec<Spanned<String>>,
}

/// Parses and validates a directory file; returns each user with all of their groups, direct
/// and inherited through `memberOf`. `file` is used only in messages.
///
/// On error, returns every problem found in the file (a cycle of groups is reported once).
pub fn parse_directory(
    file: &str,
    text: &str,
) -> Result<BTreeMap<String, BTreeSet<String>>, Diagnostics> {
    yaml::expect_kind(file, text, DocumentKind::Directory)?;
    let doc: DirectoryDoc = yaml::parse_yaml(file, text)?;
    let mut sink = Sink::new(file);
    yaml::check_header(&mut sink, &doc.api_version);
    let spec = doc.spec.value;
    let spec_loc = doc.spec.referenced;

    // Names are map keys, whose positions serde does not give us: point at the map.
    for name in spec.users.keys().chain(spec.groups.keys()) {
        if let Err(m) = check_name(name) {
            sink.error(spec_loc, m);
        }
    }
    let mut parents: BTreeMap<&str, Vec<&Spanned<String>>> = BTreeMap::new();
    for (group, doc) in &spec.groups {
        for parent in &doc.value.member_of {
            if let Err(m) = check_name(&parent.value) {
                sink.error(parent.referenced, m);
            }
            parents.entry(group.as_str()).or_default().push(parent);
        }
    }
    // Transitive closure of every group, refusing cycles (a cycle is a mistake in a file
    // someone writes; LDAP, which we do not control, tolerates them instead).
    let closure = match resolve(spec.groups.keys().map(String::as_str), &parents) {
        Ok(c) => c,
        Err((loc, m)) => {
            sink.error(loc, m);
            BTreeMap::new()
        }
    };
    let mut users = BTreeMap::new();
    for (user, direct) in &spec.users {
        let mut names = BTreeSet::new();
        for g in &direct.value {
            if let Err(m) = check_name(&g.value) {
                sink.error(g.referenced, m);
            }
            names.insert(g.value.clone());
            if let Some(up) = closure.get(g.value.as_str()) {
                names.extend(up.iter().map(|s| (*s).to_owned()));
            }
        }
        users.insert(user.clone(), names);
    }
    sink.finish()?;
    Ok(users)
}

/// Every group each of `groups` is in, directly or not; or where the first cycle found closes
/// and what it is.
///
/// Depth-first without recursion, so that a long chain of groups in a file costs heap rather
/// than overflowing the stack (this crate must not crash on any input).
fn resolve<'a>(
    groups: impl Iterator<Item = &'a str>,
    parents: &BTreeMap<&'a str, Vec<&'a Spanned<String>>>,
) -> Result<BTreeMap<&'a str, BTreeSet<&'a str>>, (Location, String)> {
    let mut closure: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for start in groups {
        if closure.contains_key(start) {
            continue;
        }
        // The groups being resolved, each with the index of its next parent to visit.
        let mut path: Vec<(&str, usize)> = vec![(start, 0)];
        let mut on_path: BTreeSet<&str> = BTreeSet::from([start]);
        while let Some(top) = path.last_mut() {
            let group = top.0;
            let up = parents.get(group).map(Vec::as_slice).unwrap_or_default();
            if let Some(parent) = up.get(top.1) {
                top.1 += 1;
                let p = parent.value.as_str();
                if on_path.contains(p) {
                    let from = path.iter().position(|(g, _)| *g == p).unwrap_or(0);
                    let mut cycle: Vec<&str> = path[from..].iter().map(|(g, _)| *g).collect();
                    cycle.push(p);
                    return Err((
                        parent.referenced,
                        format!("groups form a cycle: {}", cycle.join(" -> ")),
                    ));
                }
                if !closure.contains_key(p) {
                    path.push((p, 0));
                    on_path.insert(p);
                }
                continue;
            }
            // Every parent is resolved: this group is in them and in all they are in.
            let mut all = BTreeSet::new();
            for parent in up {
                let p = parent.value.as_str();
                all.insert(p);
                if let Some(more) = closure.get(p) {
                    all.extend(more.iter().copied());
                }
            }
            closure.insert(group, all);
            on_path.remove(group);
            path.pop();
        }
    }
    Ok(closure)
}

/// Checks a user or group name. Looser than [`crate::is_valid_name`] on purpose: these are
/// directory names (`Domain Admins`), compared with what LDAP returns, not names in our files.
fn check_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("a user or group name is empty".to_owned());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("name {name:?} is longer than {MAX_NAME_LEN} bytes"));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("name {name:?} contains a control character"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
apiVersion: eastwall.dev/v1
kind: Directory
metadata: {name: corp}
spec:
  users:
    alice: [finance]
    bob: [hr]
    carol: [finance-admins]
    dave: []
  groups:
    finance-admins: {memberOf: [finance]}
    finance: {memberOf: [staff]}
    hr: {memberOf: [staff]}
";

    fn names<'a>(users: &'a BTreeMap<String, BTreeSet<String>>, user: &str) -> Vec<&'a str> {
        users
            .get(user)
            .map(|g| g.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }

    #[test]
    fn resolves_nested_groups_transitively() {
        let d = parse_directory("dir.yaml", GOOD).unwrap();
        assert_eq!(names(&d, "alice"), ["finance", "staff"]);
        assert_eq!(names(&d, "bob"), ["hr", "staff"]);
        assert_eq!(names(&d, "carol"), ["finance", "finance-admins", "staff"]);
        assert!(d["dave"].is_empty());
        assert!(!d.contains_key("mallory"));
        assert_eq!(
            d.keys().map(String::as_str).collect::<Vec<_>>(),
            ["alice", "bob", "carol", "dave"]
        );
    }

    #[test]
    fn resolves_a_long_chain() {
        // g0 is in g1, g1 in g2, ...: deep enough to matter, small enough to stay fast.
        let n = 1000;
        let mut text = "apiVersion: eastwall.dev/v1\nkind: Directory\nspec:\n  users:\n    alice: [g0]\n  groups:\n".to_owned();
        for i in 0..n {
            text.push_str(&format!("    g{i}: {{memberOf: [g{}]}}\n", i + 1));
        }
        let d = parse_directory("dir.yaml", &text).unwrap();
        assert_eq!(d["alice"].len(), n + 1);
        assert!(d["alice"].contains(&format!("g{n}")));
    }

    fn err(text: &str) -> String {
        parse_directory("dir.yaml", text).unwrap_err().to_string()
    }

    #[test]
    fn refuses_a_cycle_with_its_location() {
        let e = err("\
apiVersion: eastwall.dev/v1
kind: Directory
spec:
  users: {alice: [a]}
  groups:
    a: {memberOf: [b]}
    b: {memberOf: [c]}
    c: {memberOf: [a]}
");
        assert!(e.starts_with("dir.yaml:"), "{e}");
        assert!(e.contains("cycle: a -> b -> c -> a"), "{e}");
        assert!(e.starts_with("dir.yaml:8:"), "{e}");
        // Reported once, not once per group on it.
        assert_eq!(e.lines().count(), 1, "{e}");
    }

    #[test]
    fn refuses_unknown_fields_with_file_line_col() {
        let e = err("\
apiVersion: eastwall.dev/v1
kind: Directory
spec:
  users: {alice: [finance]}
  gropus: {}
");
        assert!(e.starts_with("dir.yaml:5:3:"), "{e}");
        assert!(e.contains("gropus"), "{e}");
        let e = err("\
apiVersion: eastwall.dev/v1
kind: Directory
spec:
  groups:
    finance: {memberof: [staff]}
");
        assert!(e.starts_with("dir.yaml:5:"), "{e}");
        assert!(e.contains("memberof"), "{e}");
    }

    #[test]
    fn refuses_wrong_header_and_shapes() {
        let e = err("apiVersion: eastwall.dev/v2\nkind: Directory\nspec: {}\n");
        assert!(e.starts_with("dir.yaml:1:13:"), "{e}");
        let e = err("apiVersion: eastwall.dev/v1\nkind: Policy\nspec: {}\n");
        assert!(
            e.starts_with("dir.yaml:2:7:") && e.contains("Directory"),
            "{e}"
        );
        let e = err(
            "apiVersion: eastwall.dev/v1\nkind: Directory\nspec:\n  users:\n    alice: finance\n",
        );
        assert!(e.starts_with("dir.yaml:5:"), "{e}");
        let e = err(
            "apiVersion: eastwall.dev/v1\nkind: Directory\nspec:\n  users:\n    alice: [\"\"]\n",
        );
        assert!(e.contains("empty"), "{e}");
        let e = err("");
        assert!(e.starts_with("dir.yaml:"), "{e}");
        let e = err(
            "apiVersion: eastwall.dev/v1\nkind: Directory\nspec:\n  users: {alice: [a]}\n---\nkind: x\n",
        );
        assert!(e.starts_with("dir.yaml:"), "{e}");
        let e = err("a: &x [*x]\n");
        assert!(e.starts_with("dir.yaml:"), "{e}");
    }

    #[test]
    fn reports_every_bad_name_at_once() {
        let e = err(
            "apiVersion: eastwall.dev/v1\nkind: Directory\nspec:\n  users:\n    alice: [\"\"]\n  groups:\n    g: {memberOf: [\"a\\tb\"]}\n",
        );
        assert_eq!(e.lines().count(), 2, "{e}");
        assert!(
            e.starts_with("dir.yaml:5:13: a user or group name is empty"),
            "{e}"
        );
        assert!(
            e.contains("dir.yaml:7:20: name \"a\\tb\" contains a control character"),
            "{e}"
        );
    }

    #[test]
    fn is_a_document_kind() {
        assert_eq!(
            crate::document_kind("dir.yaml", GOOD).unwrap(),
            DocumentKind::Directory
        );
    }
}
