//! The stream IDS/IPS of eastwall (not yet built).
//!
//! This crate will own the Suricata rule parser, the compiled multi-pattern matcher, the
//! per-flow incremental inspector and EVE JSON alerts, as a pure core without I/O: the node
//! feeds it the bytes of allowed streams after the tunnel has decrypted them and acts on its
//! verdicts. Nothing is implemented yet; the node does not inspect traffic.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
