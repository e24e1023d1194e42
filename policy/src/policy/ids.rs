//! IDS profiles (`spec.idsProfiles`): which signatures inspect what a rule allows, and
//! whether they only alert or also block. Pure data here; the node maps a profile onto the
//! IDS engine (this crate does not depend on it).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde_saphyr::Spanned;

use super::format::{IdsProfileDoc, IntDoc};
use crate::diag::{Pos, Sink};
use crate::yaml;

/// What the IDS does when a signature of the profile matches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum IdsMode {
    /// Alert only (the default).
    #[default]
    Detect,
    /// Alert and stop the stream (IPS).
    Prevent,
}

impl IdsMode {
    /// `detect` or `prevent`, as written in policy files.
    pub fn as_str(self) -> &'static str {
        match self {
            IdsMode::Detect => "detect",
            IdsMode::Prevent => "prevent",
        }
    }
}

impl fmt::Display for IdsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Lowest priority value (Suricata priorities run from 1, the most severe, to 4).
const MIN_SEVERITY: u8 = 1;
/// Highest priority value.
const MAX_SEVERITY: u8 = 4;

/// An IDS profile: the signatures that inspect traffic allowed by rules naming it.
///
/// A signature is selected when it passes every filter given (they are AND-ed): its
/// classtype is one of `classtypes`, its severity (Suricata priority, 1 = most severe) is
/// at most `max_severity`, its sid is one of `sids`; and its sid is not in `exclude_sids`.
/// A filter that is not given passes every signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdsProfile {
    /// The profile's name, referenced by rules' `ids`.
    pub name: Arc<str>,
    /// Detect (alert) or prevent (alert and block).
    pub mode: IdsMode,
    /// Classtypes to keep; empty: all.
    pub classtypes: Vec<String>,
    /// Keep signatures of at most this severity value (1..=4); `None`: all.
    pub max_severity: Option<u8>,
    /// Sids to keep, sorted; empty: all.
    pub sids: Vec<u32>,
    /// Sids never to run, sorted.
    pub exclude_sids: Vec<u32>,
}

impl IdsProfile {
    /// Whether the profile selects a signature with this sid, classtype and severity.
    pub fn selects(&self, sid: u32, classtype: Option<&str>, severity: u8) -> bool {
        (self.classtypes.is_empty()
            || classtype.is_some_and(|c| self.classtypes.iter().any(|k| k == c)))
            && self.max_severity.is_none_or(|m| severity <= m)
            && (self.sids.is_empty() || self.sids.binary_search(&sid).is_ok())
            && self.exclude_sids.binary_search(&sid).is_err()
    }
}

/// Validates and compiles `spec.idsProfiles`; returns the profiles without errors and, by
/// name, where each is defined.
pub(crate) fn compile_profiles(
    sink: &mut Sink<'_>,
    docs: Vec<IdsProfileDoc>,
) -> (Vec<IdsProfile>, HashMap<String, Pos>) {
    let mut seen: HashMap<String, Pos> = HashMap::new();
    let mut out = Vec::with_capacity(docs.len());
    for d in docs {
        let at = Pos::from(d.name.referenced);
        let name_ok = yaml::check_name(sink, &d.name, "IDS profile name");
        if let Some(first) = seen.get(&d.name.value) {
            sink.error(
                at,
                format!(
                    "duplicate IDS profile name `{}` (first at {first})",
                    d.name.value
                ),
            );
            continue;
        }
        if name_ok {
            seen.insert(d.name.value.clone(), at);
        }
        let mut ok = name_ok;
        let mode = match d.mode.as_ref().map(|m| (m.value.as_str(), m.referenced)) {
            None | Some(("detect", _)) => IdsMode::Detect,
            Some(("prevent", _)) => IdsMode::Prevent,
            Some((other, loc)) => {
                sink.error(
                    loc,
                    format!(
                        "invalid IDS mode `{}` (expected detect or prevent)",
                        other.escape_debug()
                    ),
                );
                ok = false;
                IdsMode::Detect
            }
        };
        let mut classtypes = Vec::new();
        if let Some(c) = &d.classtypes {
            if c.items.is_empty() {
                sink.error(
                    c.at,
                    "empty `classtypes` list (it would select nothing); omit the field to select all",
                );
                ok = false;
            }
            for (t, at) in &c.items {
                if t.is_empty()
                    || !t
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
                {
                    sink.error(
                        *at,
                        format!(
                            "invalid classtype `{}`: use letters, digits, `-` and `_` (e.g. web-application-attack)",
                            t.escape_debug()
                        ),
                    );
                    ok = false;
                } else if !classtypes.contains(t) {
                    classtypes.push(t.clone());
                }
            }
        }
        let max_severity = d.max_severity.as_ref().and_then(|s| {
            let v = u8::try_from(s.value.0)
                .ok()
                .filter(|v| (MIN_SEVERITY..=MAX_SEVERITY).contains(v));
            if v.is_none() {
                sink.error(
                    s.referenced,
                    format!(
                        "maxSeverity {} is out of range ({MIN_SEVERITY}, the most severe, to {MAX_SEVERITY})",
                        s.value.0
                    ),
                );
                ok = false;
            }
            v
        });
        let sids = compile_sids(sink, d.sids.as_ref(), "sids", &mut ok);
        let exclude_sids = compile_sids(sink, d.exclude_sids.as_ref(), "excludeSids", &mut ok);
        if let Some(ex) = &d.exclude_sids {
            for s in &sids {
                if exclude_sids.binary_search(s).is_ok() {
                    sink.warning(
                        ex.referenced,
                        format!("sid {s} is both in `sids` and in `excludeSids`; it is excluded"),
                    );
                }
            }
        }
        if ok {
            out.push(IdsProfile {
                name: Arc::from(d.name.value.as_str()),
                mode,
                classtypes,
                max_severity,
                sids,
                exclude_sids,
            });
        }
    }
    (out, seen)
}

fn compile_sids(
    sink: &mut Sink<'_>,
    v: Option<&Spanned<Vec<Spanned<IntDoc>>>>,
    field: &str,
    ok: &mut bool,
) -> Vec<u32> {
    let Some(v) = v else { return Vec::new() };
    if v.value.is_empty() {
        sink.error(
            v.referenced,
            format!("empty `{field}` list; omit the field instead"),
        );
        *ok = false;
    }
    let mut out = Vec::with_capacity(v.value.len());
    for s in &v.value {
        match u32::try_from(s.value.0).ok().filter(|&n| n != 0) {
            Some(n) => out.push(n),
            None => {
                sink.error(
                    s.referenced,
                    format!("sid {} is out of range (1-4294967295)", s.value.0),
                );
                *ok = false;
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selects_with_and_ed_filters() {
        let p = IdsProfile {
            name: "web".into(),
            mode: IdsMode::Prevent,
            classtypes: vec!["web-application-attack".into(), "attempted-admin".into()],
            max_severity: Some(2),
            sids: vec![],
            exclude_sids: vec![2012345],
        };
        #[rustfmt::skip]
        let cases: &[(u32, Option<&str>, u8, bool)] = &[
            (1, Some("web-application-attack"), 1, true),
            (1, Some("attempted-admin"), 2, true),
            (1, Some("attempted-admin"), 3, false),
            (1, Some("trojan-activity"), 1, false),
            (1, None, 1, false),
            (2012345, Some("web-application-attack"), 1, false),
        ];
        for &(sid, class, sev, want) in cases {
            assert_eq!(p.selects(sid, class, sev), want, "{sid} {class:?} {sev}");
        }
        let only = IdsProfile {
            classtypes: vec![],
            max_severity: None,
            sids: vec![5, 7],
            exclude_sids: vec![7],
            ..p
        };
        assert!(only.selects(5, None, 4));
        assert!(!only.selects(6, None, 1));
        assert!(!only.selects(7, None, 1));
        assert_eq!(IdsMode::default(), IdsMode::Detect);
        assert_eq!(IdsMode::Prevent.to_string(), "prevent");
    }
}
