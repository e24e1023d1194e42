//! The report of `eastwall ids check FILES…`: what loads, what is skipped and why, what is
//! wrong and where.

use crate::class::Classifications;
use crate::compile::{Engine, Selection};
use crate::rule::{RuleError, SkipReason, Skipped, parse_rules};
use crate::vars::Vars;
use std::collections::BTreeMap;
use std::fmt;

/// Example sids shown per skip reason.
const EXAMPLES: usize = 5;

/// Counts for one rules file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileReport {
    /// The file's name.
    pub source: String,
    /// Rules an engine would hold.
    pub loaded: usize,
    /// Rules skipped (unsupported or unresolved).
    pub skipped: usize,
    /// Malformed rules.
    pub errors: usize,
}

/// What a set of rules files amounts to.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Per file, in the order given.
    pub files: Vec<FileReport>,
    /// Every skipped rule.
    pub skipped: Vec<Skipped>,
    /// Every malformed rule.
    pub errors: Vec<RuleError>,
    /// Flowbits some rule tests but none sets.
    pub flowbits_never_set: Vec<String>,
    /// Sids of rules whose classtype is unknown.
    pub unknown_classtypes: Vec<u32>,
}

impl CheckReport {
    /// Rules loaded in all files.
    pub fn loaded(&self) -> usize {
        self.files.iter().map(|f| f.loaded).sum()
    }

    /// Rules in all files (loaded, skipped or malformed).
    pub fn total(&self) -> usize {
        self.files
            .iter()
            .map(|f| f.loaded + f.skipped + f.errors)
            .sum()
    }

    /// Share of rules loaded, in percent.
    pub fn loaded_percent(&self) -> f64 {
        if self.total() == 0 {
            return 0.0;
        }
        100.0 * self.loaded() as f64 / self.total() as f64
    }

    /// Skipped rules grouped by reason: (reason, count, example sids), most frequent first.
    pub fn skipped_by_reason(&self) -> Vec<(&SkipReason, usize, Vec<u32>)> {
        let mut groups: BTreeMap<&SkipReason, (usize, Vec<u32>)> = BTreeMap::new();
        for s in &self.skipped {
            let g = groups.entry(&s.reason).or_default();
            g.0 += 1;
            if let Some(sid) = s.sid
                && g.1.len() < EXAMPLES
            {
                g.1.push(sid);
            }
        }
        let mut out: Vec<_> = groups.into_iter().map(|(r, (n, s))| (r, n, s)).collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        out
    }
}

/// Check rules files (name, text) as an engine with these variables would load them.
pub fn check(sources: &[(&str, &str)], vars: &Vars, classes: &Classifications) -> CheckReport {
    let mut report = CheckReport::default();
    let mut all_rules = Vec::new();
    for (name, text) in sources {
        let parsed = parse_rules(name, text);
        report.files.push(FileReport {
            source: name.to_string(),
            loaded: parsed.rules.len(),
            skipped: parsed.skipped.len(),
            errors: parsed.errors.len(),
        });
        report.skipped.extend(parsed.skipped);
        report.errors.extend(parsed.errors);
        all_rules.extend(parsed.rules);
    }
    let (_, build) = Engine::build(&all_rules, vars, classes, &Selection::all());
    for s in &build.skipped {
        if let Some(f) = report.files.iter_mut().find(|f| f.source == s.source) {
            f.loaded -= 1;
            f.skipped += 1;
        }
    }
    report.skipped.extend(build.skipped);
    report.flowbits_never_set = build.flowbits_never_set;
    report.unknown_classtypes = build.unknown_classtypes;
    report
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for file in &self.files {
            writeln!(
                f,
                "{}: {} loaded, {} skipped, {} errors",
                file.source, file.loaded, file.skipped, file.errors
            )?;
        }
        writeln!(
            f,
            "total: {} loaded, {} skipped, {} errors of {} rules ({:.1}% loaded)",
            self.loaded(),
            self.skipped.len(),
            self.errors.len(),
            self.total(),
            self.loaded_percent()
        )?;
        let groups = self.skipped_by_reason();
        if !groups.is_empty() {
            writeln!(f, "\nskipped, by reason:")?;
            for (reason, n, sids) in groups {
                let sids: Vec<String> = sids.iter().map(u32::to_string).collect();
                writeln!(f, "  {n:6}  {reason} (e.g. sid {})", sids.join(", "))?;
            }
        }
        if !self.errors.is_empty() {
            writeln!(f, "\nerrors:")?;
            for e in &self.errors {
                writeln!(f, "  {e}")?;
            }
        }
        if !self.flowbits_never_set.is_empty() {
            writeln!(
                f,
                "\nflowbits tested but never set (those rules cannot match): {}",
                self.flowbits_never_set.join(", ")
            )?;
        }
        if !self.unknown_classtypes.is_empty() {
            writeln!(
                f,
                "\n{} rules have a classtype missing from the classification table (severity 3)",
                self.unknown_classtypes.len()
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_and_counts() {
        let a = "alert tcp any any -> any any (msg:\"ok\"; content:\"x\"; sid:1;)\n\
                 alert icmp any any -> any any (msg:\"u\"; sid:2;)\n\
                 alert icmp any any -> any any (msg:\"u\"; sid:3;)\n";
        let b = "alert tcp $NOPE any -> any any (msg:\"v\"; sid:4;)\n\
                 alert tcp any any -> any any (msg:\"e\"; content:\"|zz|\"; sid:5;)\n\
                 alert tcp any any -> any any (msg:\"f\"; flowbits:isset,never; sid:6;)\n";
        let r = check(
            &[("a.rules", a), ("b.rules", b)],
            &Vars::suricata_defaults(),
            &Classifications::suricata_defaults(),
        );
        assert_eq!(
            r.files[0],
            FileReport {
                source: "a.rules".into(),
                loaded: 1,
                skipped: 2,
                errors: 0
            }
        );
        assert_eq!(
            r.files[1],
            FileReport {
                source: "b.rules".into(),
                loaded: 1,
                skipped: 1,
                errors: 1
            }
        );
        assert_eq!(r.loaded(), 2);
        assert_eq!(r.total(), 6);
        let text = r.to_string();
        assert!(
            text.contains("total: 2 loaded, 3 skipped, 1 errors of 6 rules (33.3% loaded)"),
            "{text}"
        );
        assert!(
            text.contains("     2  protocol not inspected: icmp (e.g. sid 2, 3)"),
            "{text}"
        );
        assert!(
            text.contains("unresolved: undefined variable `$NOPE`"),
            "{text}"
        );
        assert!(text.contains("b.rules:2:"), "{text}");
        assert!(
            text.contains("never set (those rules cannot match): never"),
            "{text}"
        );
    }
}
