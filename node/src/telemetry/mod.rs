//! What a node tells the world about its work: Prometheus [`metrics`] and the EVE event log
//! ([`flowlog`]). Every part of the data path writes through one [`Telemetry`].

pub(crate) mod flowlog;
pub(crate) mod metrics;

pub(crate) use flowlog::FlowLog;
pub(crate) use metrics::Metrics;

/// The node's metrics and event log, shared by every connection.
pub(crate) struct Telemetry {
    /// Counters and gauges.
    pub(crate) metrics: Metrics,
    /// The EVE log (flow, http and alert events).
    pub(crate) flows: FlowLog,
}
