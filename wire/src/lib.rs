//! eastwall's wire formats, pure and sans-I/O: each takes bytes or values and returns values,
//! with no sockets, no clock and no async runtime, so each is unit-tested and fuzzed alone.
//!
//! - [`sniff`]: what a client's first bytes carry (HTTP/1, HTTP/2 prior knowledge, a TLS
//!   ClientHello with SNI and ALPN, or opaque bytes);
//! - [`header`]: the QUIC tunnel's binary stream header and the destination's response;
//! - [`connect`]: the same facts as HTTP/2 CONNECT requests and responses (HBONE-shaped);
//! - [`capsule`]: UDP datagrams on a tunnel stream (HTTP Datagrams in capsules, RFC 9297);
//! - [`dns`]: DNS messages as far as rules on query names and records need them;
//! - [`packet`]: the facts of an IP packet a new flow of another protocol is decided on;
//! - [`eve`]: the Suricata EVE JSON events every node writes (flow, http, alert).
//!
//! The node reads sockets and hands the bytes here; the IDS builds its alerts with [`eve`].
//! `docs/TUNNEL.md` describes the tunnel formats on the wire.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod capsule;
pub mod connect;
pub mod dns;
pub mod eve;
pub mod header;
pub mod packet;
pub mod sniff;
