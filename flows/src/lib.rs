//! eastwall's recorded flows as values, for the journey from flows to policy:
//!
//! - [`observation`]: what the nodes decided, read from their EVE records (`flow`, `http`,
//!   `dns`): one [`Observation`] per decision, with both ends as the node knew them;
//! - [`replay`]: every observation decided again with a candidate registry and policy, by
//!   the same pure decision code as the node, and what would change;
//! - [`recommend`]: a policy that allows what was observed allowed, by app and zone, users'
//!   groups, ports, HTTP methods and generalized paths, DNS names, with its evidence;
//! - [`edge`]: the collector's per-edge aggregates, and the observations they stand for (a
//!   recommendation over weeks from thousands of edges, not millions of records);
//! - [`record`]: any EVE record as the columns a collector stores, and [`filter`]: which
//!   records to show (`eastwall observe`);
//! - [`anomaly`]: lateral-movement signals (a new peer after the learning period, denials
//!   across zones) as EVE `anomaly` events.
//!
//! Pure: values in, values out; reading files and printing are the CLI's.

pub mod anomaly;
pub mod edge;
pub mod filter;
pub mod observation;
pub mod recommend;
pub mod record;
pub mod replay;

pub use crate::observation::{Observation, Observations, RecordedL7, Side, Verdict};
