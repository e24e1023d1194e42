//! The stream IDS/IPS of eastwall.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod rule;

pub use crate::rule::{Parsed, Rule, RuleError, SkipReason, Skipped, parse_rules};
