//! Versions and what changed: every apply makes a new [`Version`] (number, hash, who, when,
//! why) and keeps its [`Change`]s under `history/`, so any version can be shown and put back
//! in force ([`replay`]), whatever etcd compacts.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::snapshot::Snapshot;

/// One applied version of the configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// 1, 2, ...: one more at each apply.
    pub version: u64,
    /// The snapshot's hash ([`Snapshot::hash`]).
    pub hash: String,
    /// Who applied it: the store user (the client certificate's name) and the local user.
    pub author: String,
    /// When, RFC 3339 UTC.
    pub time: String,
    /// Why: the message given to `apply`, or what the command did.
    pub message: String,
    /// How many keys it changed.
    pub changed: usize,
}

/// One key's change between two snapshots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The key, relative to `config/`.
    pub key: String,
    /// Its value before (`None`: it was not there).
    pub before: Option<String>,
    /// Its value after (`None`: removed).
    pub after: Option<String>,
}

/// What changes between `from` and `to`, by key.
pub fn changes(from: &Snapshot, to: &Snapshot) -> Vec<Change> {
    let (a, b) = (from.values(), to.values());
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|k| {
            let (before, after) = (a.get(k), b.get(k));
            (before != after).then(|| Change {
                key: k.clone(),
                before: before.cloned(),
                after: after.cloned(),
            })
        })
        .collect()
}

/// Most lines of diff shown for one key.
const MAX_DIFF_LINES: usize = 200;

/// The changes as a unified diff, one section per key (`source` names the keys).
pub fn render(changes: &[Change], source: &str) -> String {
    let mut out = String::new();
    for c in changes {
        let (old, new) = (
            c.before.as_deref().unwrap_or(""),
            c.after.as_deref().unwrap_or(""),
        );
        let what = match (&c.before, &c.after) {
            (None, _) => "added",
            (_, None) => "removed",
            _ => "changed",
        };
        let _ = writeln!(out, "=== {source}{} ({what})", c.key);
        let diff = similar::TextDiff::from_lines(old, new);
        let text = diff
            .unified_diff()
            .context_radius(2)
            .header("stored", "applied")
            .to_string();
        // A rule set of thousands of rules is summed up, not printed whole.
        let lines = text.lines().count();
        if lines > MAX_DIFF_LINES {
            for l in text.lines().take(MAX_DIFF_LINES) {
                let _ = writeln!(out, "{l}");
            }
            let (added, removed) =
                text.lines()
                    .skip(2)
                    .fold((0, 0), |(a, r), l| match l.as_bytes().first() {
                        Some(b'+') => (a + 1, r),
                        Some(b'-') => (a, r + 1),
                        _ => (a, r),
                    });
            let _ = writeln!(
                out,
                "... {} more lines of diff ({added} lines added, {removed} removed in all)",
                lines - MAX_DIFF_LINES
            );
        } else {
            out.push_str(&text);
            if !old.ends_with('\n') || !new.ends_with('\n') {
                out.push('\n');
            }
        }
    }
    out
}

/// The snapshot after versions 1..=n, from their changes in order (`(version, changes)`,
/// each change giving its `after`).
pub fn replay<'a>(versions: impl IntoIterator<Item = &'a [Change]>) -> Snapshot {
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    for changes in versions {
        for c in changes {
            match &c.after {
                Some(v) => values.insert(c.key.clone(), v.clone()),
                None => values.remove(&c.key),
            };
        }
    }
    Snapshot::from_values(values)
}

/// Now, RFC 3339 UTC.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(pairs: &[(&str, &str)]) -> Snapshot {
        Snapshot::from_values(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn changes_are_additions_removals_and_edits_by_key() {
        let a = snap(&[
            ("policy", "p1\n"),
            ("workloads/a", "A"),
            ("workloads/b", "B"),
        ]);
        let b = snap(&[
            ("policy", "p2\n"),
            ("workloads/b", "B"),
            ("workloads/c", "C"),
        ]);
        let c = changes(&a, &b);
        let keys: Vec<(&str, bool, bool)> = c
            .iter()
            .map(|c| (c.key.as_str(), c.before.is_some(), c.after.is_some()))
            .collect();
        assert_eq!(
            keys,
            [
                ("policy", true, true),
                ("workloads/a", true, false),
                ("workloads/c", false, true)
            ]
        );
        assert!(changes(&a, &a).is_empty());
        let text = render(&c, "etcd:/eastwall/config/");
        assert!(
            text.contains("=== etcd:/eastwall/config/policy (changed)"),
            "{text}"
        );
        assert!(text.contains("-p1") && text.contains("+p2"), "{text}");
        assert!(text.contains("workloads/a (removed)"), "{text}");
        assert!(text.contains("workloads/c (added)"), "{text}");
    }

    #[test]
    fn replaying_the_changes_of_each_version_gives_its_snapshot() {
        let v1 = snap(&[("policy", "p1"), ("workloads/a", "A")]);
        let v2 = snap(&[("policy", "p2"), ("workloads/a", "A"), ("workloads/b", "B")]);
        let v3 = snap(&[("policy", "p2"), ("workloads/b", "B2")]);
        let c1 = changes(&Snapshot::default(), &v1);
        let c2 = changes(&v1, &v2);
        let c3 = changes(&v2, &v3);
        assert_eq!(replay([c1.as_slice()]), v1);
        assert_eq!(replay([c1.as_slice(), c2.as_slice()]), v2);
        assert_eq!(replay([c1.as_slice(), c2.as_slice(), c3.as_slice()]), v3);
    }
}
