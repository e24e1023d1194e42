//! eastwall's policy core: the registry, policy and directory file formats, their validation,
//! the compiled policy, and `decide`.
//!
//! Data flows one way. The node reads files and hands their text here:
//! [`document_kind`] says what a file is; [`Registry::parse`] validates a registry into
//! lookup tables (workload by address, name or identity; node by address, name or
//! identity);
//! [`Policy::parse`] validates a policy against that registry (unknown names are warnings)
//! and compiles it: names become sets, CIDRs are parsed, ports become sorted ranges, L7
//! patterns become matchers, and rules are indexed by destination port; rules that can
//! never match (conflicting criteria, shadowed by an earlier rule) are warned about. Every
//! problem in a file is reported at once as [`Diagnostics`], each `file:line:col: message`.
//! [`parse_directory`] validates a directory file (users and nested groups, for sites
//! without LDAP) into each user's full set of groups.
//! For each connection the node builds a [`Flow`] from two [`Endpoint`]s (address,
//! registry workload if any, the endpoint's [`SpiffeId`] when the node has proven it from a
//! certificate, its user and groups) and calls [`Policy::decide`], which returns a
//! [`Decision`]: first matching `enforce` rule in file order, `monitor` rules seen before
//! it, default deny. When a rule with L7 conditions made that decision depend on the
//! protocol ([`Decision::needs_l7`]), the node decides again with the [`L7`] facts of each
//! HTTP request (its path from [`normalize_path`]), TLS ClientHello or opaque stream.
//! [`Policy::explain`] runs the same evaluation and says why each rule did or did not
//! match.
//!
//! This crate does no I/O and never panics on any input; `docs/POLICY.md` describes the
//! formats for users.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod diag;
mod directory;
mod path;
mod policy;
mod registry;
mod yaml;

pub use crate::diag::{Diagnostic, Diagnostics, Severity};
pub use crate::directory::parse_directory;
pub use crate::path::{PathError, normalize_path};
pub use crate::policy::{
    Action, Decision, Endpoint, Explanation, Flow, HttpRequestFacts, IdsMode, IdsProfile, L7, Mode,
    MonitorHit, Policy, Protocol, RuleRef, RuleSummary, Step, StepOutcome,
};
pub use crate::registry::{DEFAULT_TRUST_DOMAIN, NodeEntry, Registry, Workload};
pub use crate::yaml::{
    API_VERSION, DocumentKind, MAX_FILE_BYTES, document_kind, is_valid_name, parse_yaml,
};
pub use eastwall_identity::SpiffeId;
