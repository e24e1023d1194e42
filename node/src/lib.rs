//! The eastwall node: everything that touches the host. It reads as one pipeline per
//! connection (see `docs/ARCHITECTURE.md`):
//!
//! ```text
//! accept    front::capture (TPROXY listeners), front::tunnel (streams from other nodes)
//! identify  conn::plan::identify (pure), users' groups from the directory
//! plan      conn::plan::plan (pure): the rules in force, this node, the two ends -> Plan
//! carry     conn::carry: connect from the client's address, IDS, relay; l7 per request
//! record    conn::record::FlowGuard: one EVE flow event and the metrics, exactly once
//! ```
//!
//! Below the pipeline, each concern in its own module, importing only downward (the layers
//! are checked by `tests/layers.rs` against the table in `docs/ARCHITECTURE.md`): `config`
//! (the node config, a leaf), `relay` (moving bytes), `rules`, `telemetry`, `capture`,
//! `directory`, `ca`, `identity`, `ids`, `admin`, `tunnel` (transports only, no policy);
//! above it, `reload` and `app`, which builds the node from its config and runs it.

pub(crate) mod admin;
pub mod app;
pub mod ca;
pub mod capture;
pub mod collector;
pub mod config;
pub(crate) mod conn;
pub mod console;
pub(crate) mod directory;
pub(crate) mod front;
pub(crate) mod identity;
pub mod ids;
pub(crate) mod l7;
pub mod mtls;
pub(crate) mod relay;
pub(crate) mod reload;
pub(crate) mod rules;
pub mod store;
pub(crate) mod telemetry;
pub(crate) mod tunnel;
