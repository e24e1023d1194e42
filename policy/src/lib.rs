//! eastwall's policy core: the registry and policy file formats, their validation, the
//! compiled policy, and `decide`.
//!
//! Data flows one way. The node reads files and hands their text here:
//! [`document_kind`] says what a file is; [`Registry::parse`] validates a registry into
//! lookup tables (workload by address, name or identity; node by address, name or
//! identity);
//! [`Policy::parse`] validates a policy against that registry (unknown names are warnings)
//! and compiles it: names become sets, CIDRs are parsed, ports become sorted ranges, and
//! rules are indexed by destination port. Every problem in a file is reported at once as
//! [`Diagnostics`], each `file:line:col: message`. For each connection the node builds a
//! [`Flow`] from two [`Endpoint`]s (address, registry workload if any, and the endpoint's
//! [`SpiffeId`] when the node has proven it from a certificate) and calls
//! [`Policy::decide`], which returns a [`Decision`]: first matching `enforce` rule in file
//! order, `monitor` rules seen before it, default deny.
//!
//! This crate does no I/O and never panics on any input; `docs/POLICY.md` describes the
//! formats for users.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod diag;
mod path;
mod policy;
mod registry;
mod yaml;

pub use crate::diag::{Diagnostic, Diagnostics, Severity};
pub use crate::path::{PathError, normalize_path};
pub use crate::policy::{
    Action, Decision, Endpoint, Explanation, Flow, HttpRequestFacts, IdsMode, IdsProfile, L7, Mode,
    MonitorHit, Policy, RuleRef, Step, StepOutcome,
};
pub use crate::registry::{DEFAULT_TRUST_DOMAIN, NodeEntry, Registry, Workload};
pub use crate::yaml::{
    API_VERSION, DocumentKind, MAX_FILE_BYTES, document_kind, is_valid_name, parse_yaml,
};
pub use eastwall_identity::SpiffeId;
