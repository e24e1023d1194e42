//! The IDS/IPS of eastwall: Suricata rules, a compiled multi-pattern matcher, a per-flow
//! incremental inspector for TCP streams and UDP datagrams, and alerts as Suricata EVE JSON.
//!
//! Data flows one way, and nothing here does I/O or reads a clock:
//!
//! 1. [`parse_rules`] reads a rules text into [`Rule`]s; rules using something eastwall does
//!    not implement are [`Skipped`] with a groupable [`SkipReason`], malformed ones are
//!    [`RuleError`]s with line and column. [`check`] turns that into the report of
//!    `eastwall ids check`.
//! 2. [`Engine::build`] resolves rule headers with [`Vars`], looks up classtypes in
//!    [`Classifications`], keeps what a [`Selection`] asks for, and groups rules by where they
//!    are decided (raw TCP stream and UDP datagrams per direction, HTTP request / body /
//!    response / body, TLS ClientHello, DNS query) with an Aho-Corasick prefilter per
//!    buffer. The engine is immutable and shared by all flows (`Arc`); only threshold
//!    counters change inside it.
//! 3. The node makes one [`FlowInspector`] per TCP connection and feeds it what it sees, in
//!    order: raw bytes of both directions ([`FlowInspector::stream`]), and on HTTP, TLS or DNS
//!    flows the parsed messages; per UDP session one from [`FlowInspector::new_udp`], fed
//!    each datagram ([`FlowInspector::datagram`]; it reads DNS queries itself). Each call
//!    returns a [`Verdict`] with the [`Alert`]s of the rules that matched; the node decides
//!    what to do (record, or block when [`Verdict::blocks`] in prevent mode).
//! 4. [`alert_event`] turns an alert into Suricata's EVE JSON (`eastwall_wire::eve`).
//!
//! `docs/IDS.md` describes the semantics for users: supported keywords, limits, split
//! invariance and once-per-scope alerts.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod class;
mod compile;
mod decode;
mod dns;
mod eve;
mod fingerprint;
pub mod h1;
#[cfg(feature = "hyperscan")]
mod hs;
mod http;
mod inspect;
mod mail;
mod payload;
mod report;
pub mod rule;
mod threshold;
mod tls;
mod vars;
mod xbits;

pub use crate::class::Classifications;
pub use crate::compile::{BuildReport, Engine, Limits, RuleMask, Selection};
pub use crate::decode::DecodeEvent;
pub use crate::eve::{alert_event, anomaly_event, eve_alert};
pub use crate::http::{HttpRequest, HttpResponse, HttpVersion};
pub use crate::inspect::{
    Alert, Anomaly, AppProto, FlowInspector, FlowMeta, HttpSummary, Timestamp, Verdict,
};
pub use crate::report::{CheckReport, FileReport, check};
pub use crate::rule::{
    Dir, Parsed, Rule, RuleAction, RuleError, SkipKind, SkipReason, Skipped, Transport, parse_rules,
};
pub use crate::vars::{VarError, Vars};
