//! A directory from a YAML file: users and their groups written down, for the demo and for
//! sites without LDAP.
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

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;
use serde_saphyr::{Location, MessageFormatter, Spanned};

use super::{DirectoryError, GroupDirectory, Groups};

/// The only `apiVersion` understood.
const API_VERSION: &str = "eastwall.dev/v1";
/// The `kind` of a directory file.
const KIND: &str = "Directory";
/// Largest file accepted, in bytes.
const MAX_FILE_BYTES: usize = 16 * 1024 * 1024;
/// Longest user or group name accepted.
const MAX_NAME_LEN: usize = 256;

/// Users and groups read from a file; answers from memory.
#[derive(Debug, Clone, Default)]
pub struct StaticDirectory {
    users: BTreeMap<String, Groups>,
}

/// Why a directory file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StaticDirectoryError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file name.
        file: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid directory document.
    #[error("{file}:{line}:{col}: {message}")]
    Invalid {
        /// The file name.
        file: String,
        /// 1-based line of the problem (0 if unknown).
        line: u64,
        /// 1-based column of the problem (0 if unknown).
        col: u64,
        /// What is wrong.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DirectoryDoc {
    api_version: Spanned<String>,
    kind: Spanned<String>,
    #[serde(default)]
    #[allow(dead_code)]
    metadata: Option<Metadata>,
    spec: Spanned<DirectorySpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    #[serde(default)]
    #[allow(dead_code)]
    name: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    #[allow(dead_code)]
    annotations: BTreeMap<String, String>,
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

impl StaticDirectory {
    /// Reads a directory file.
    pub fn from_file(path: &Path) -> Result<StaticDirectory, StaticDirectoryError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| StaticDirectoryError::Read {
            file: file.clone(),
            source,
        })?;
        StaticDirectory::from_yaml(&file, &text)
    }

    /// Parses a directory document; `file` names it in errors.
    pub fn from_yaml(file: &str, text: &str) -> Result<StaticDirectory, StaticDirectoryError> {
        let invalid = |loc: Option<Location>, message: String| StaticDirectoryError::Invalid {
            file: file.to_owned(),
            line: loc.map_or(0, |l| l.line()),
            col: loc.map_or(0, |l| l.column()),
            message,
        };
        if text.len() > MAX_FILE_BYTES {
            return Err(invalid(
                None,
                format!("file is larger than {MAX_FILE_BYTES} bytes"),
            ));
        }
        let doc: DirectoryDoc =
            serde_saphyr::from_str_with_options(text, options()).map_err(|e| {
                let inner = e.without_snippet();
                let loc = inner.location().or_else(|| e.location());
                let message = serde_saphyr::DefaultMessageFormatter.format_message(inner);
                invalid(loc, one_line(&message))
            })?;
        if doc.api_version.value != API_VERSION {
            return Err(invalid(
                Some(doc.api_version.referenced),
                format!(
                    "apiVersion {:?} is not supported (expected {API_VERSION})",
                    doc.api_version.value
                ),
            ));
        }
        if doc.kind.value != KIND {
            return Err(invalid(
                Some(doc.kind.referenced),
                format!("kind {:?} is not {KIND}", doc.kind.value),
            ));
        }
        let spec = doc.spec.value;
        let spec_loc = doc.spec.referenced;

        // Names are map keys, whose positions serde does not give us: point at the map.
        for name in spec.users.keys().chain(spec.groups.keys()) {
            check_name(name).map_err(|m| invalid(Some(spec_loc), m))?;
        }
        let mut parents: BTreeMap<&str, Vec<&Spanned<String>>> = BTreeMap::new();
        for (group, doc) in &spec.groups {
            for parent in &doc.value.member_of {
                check_name(&parent.value).map_err(|m| invalid(Some(parent.referenced), m))?;
                parents.entry(group.as_str()).or_default().push(parent);
            }
        }
        // Transitive closure of every group, refusing cycles (a cycle is a mistake in a file
        // someone writes; LDAP, which we do not control, tolerates them instead).
        let mut closure: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        for group in spec.groups.keys() {
            let mut path = Vec::new();
            resolve(group, &parents, &mut closure, &mut path)
                .map_err(|(loc, m)| invalid(Some(loc), m))?;
        }
        let mut users = BTreeMap::new();
        for (user, direct) in &spec.users {
            let mut names = BTreeSet::new();
            for g in &direct.value {
                check_name(&g.value).map_err(|m| invalid(Some(g.referenced), m))?;
                names.insert(g.value.clone());
                if let Some(up) = closure.get(g.value.as_str()) {
                    names.extend(up.iter().cloned());
                }
            }
            users.insert(user.clone(), Groups::new(names, None));
        }
        Ok(StaticDirectory { users })
    }

    /// A directory from user -> direct group names, without nesting (for tests and the demo).
    pub fn from_users<U, G>(users: impl IntoIterator<Item = (U, G)>) -> StaticDirectory
    where
        U: Into<String>,
        G: IntoIterator,
        G::Item: Into<String>,
    {
        StaticDirectory {
            users: users
                .into_iter()
                .map(|(u, gs)| (u.into(), Groups::new(gs.into_iter().map(Into::into), None)))
                .collect(),
        }
    }

    /// The user names, sorted.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }
}

impl GroupDirectory for StaticDirectory {
    async fn groups(&self, user: &str) -> Result<Groups, DirectoryError> {
        self.users
            .get(user)
            .cloned()
            .ok_or_else(|| DirectoryError::UnknownUser {
                user: user.to_owned(),
            })
    }
}

/// Fills `closure[group]` with every group `group` is in, directly or not. `path` holds the
/// groups being resolved, to detect cycles.
fn resolve<'a>(
    group: &'a str,
    parents: &BTreeMap<&'a str, Vec<&'a Spanned<String>>>,
    closure: &mut BTreeMap<&'a str, BTreeSet<String>>,
    path: &mut Vec<&'a str>,
) -> Result<(), (Location, String)> {
    if closure.contains_key(group) {
        return Ok(());
    }
    path.push(group);
    let mut all = BTreeSet::new();
    for parent in parents.get(group).map(Vec::as_slice).unwrap_or_default() {
        let p = parent.value.as_str();
        if path.contains(&p) {
            let start = path.iter().position(|g| *g == p).unwrap_or(0);
            let mut cycle: Vec<&str> = path[start..].to_vec();
            cycle.push(p);
            return Err((
                parent.referenced,
                format!("groups form a cycle: {}", cycle.join(" -> ")),
            ));
        }
        resolve(p, parents, closure, path)?;
        all.insert(p.to_owned());
        if let Some(up) = closure.get(p) {
            all.extend(up.iter().cloned());
        }
    }
    path.pop();
    closure.insert(group, all);
    Ok(())
}

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

fn options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    // One shallow document: bound everything so a hostile or broken file costs little.
    budget.max_documents = 1;
    budget.max_depth = 16;
    budget.max_events = 2_000_000;
    budget.max_nodes = 1_000_000;
    budget.max_aliases = 1_000;
    budget.max_anchors = 1_000;
    budget.max_total_scalar_bytes = MAX_FILE_BYTES;
    budget.max_merge_keys = 1_000;
    let mut o = serde_saphyr::Options::default();
    o.budget = Some(budget);
    o.with_snippet = false;
    o
}

/// Squashes a message to one line.
fn one_line(s: &str) -> String {
    let joined = s.split(char::is_control).filter(|p| !p.trim().is_empty());
    let out = joined.map(str::trim).collect::<Vec<_>>().join(" ");
    if out.is_empty() {
        "invalid YAML".to_owned()
    } else {
        out
    }
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

    fn names(g: &Groups) -> Vec<&str> {
        g.iter().collect()
    }

    async fn lookup(d: &StaticDirectory, user: &str) -> Result<Groups, DirectoryError> {
        d.groups(user).await
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn resolves_nested_groups_transitively() {
        let d = StaticDirectory::from_yaml("dir.yaml", GOOD).unwrap();
        block_on(async {
            assert_eq!(
                names(&lookup(&d, "alice").await.unwrap()),
                ["finance", "staff"]
            );
            assert_eq!(names(&lookup(&d, "bob").await.unwrap()), ["hr", "staff"]);
            assert_eq!(
                names(&lookup(&d, "carol").await.unwrap()),
                ["finance", "finance-admins", "staff"]
            );
            assert!(lookup(&d, "dave").await.unwrap().is_empty());
            let err = lookup(&d, "mallory").await.unwrap_err();
            assert!(err.is_unknown_user(), "{err}");
        });
        assert_eq!(
            d.users().collect::<Vec<_>>(),
            ["alice", "bob", "carol", "dave"]
        );
    }

    fn err(text: &str) -> String {
        StaticDirectory::from_yaml("dir.yaml", text)
            .unwrap_err()
            .to_string()
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
    fn reads_from_a_file_and_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("directory.yaml");
        std::fs::write(&path, GOOD).unwrap();
        let d = StaticDirectory::from_file(&path).unwrap();
        assert_eq!(d.users().count(), 4);
        let missing = dir.path().join("missing.yaml");
        let e = StaticDirectory::from_file(&missing)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("missing.yaml") && e.contains("cannot read"),
            "{e}"
        );
    }

    #[test]
    fn builds_from_users() {
        let d = StaticDirectory::from_users([("alice", ["finance"]), ("bob", ["hr"])]);
        let g = block_on(d.groups("bob")).unwrap();
        assert_eq!(names(&g), ["hr"]);
    }
}
