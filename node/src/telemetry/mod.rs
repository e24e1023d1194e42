//! What a node tells the world about its work: Prometheus [`metrics`], the EVE event log
//! ([`flowlog`]), with floods of one kind of flow folded into aggregates ([`aggregate`]),
//! and its [`health`]. Every part of the data path writes through one [`Telemetry`].

pub(crate) mod aggregate;
pub(crate) mod flowlog;
pub(crate) mod health;
pub(crate) mod metrics;

use std::time::{Instant, SystemTime};

use eastwall_wire::eve::FlowEvent;

pub(crate) use flowlog::FlowLog;
pub(crate) use metrics::Metrics;

use self::aggregate::Folds;
use self::health::Health;

/// The node's metrics, event log and health, shared by every connection.
pub(crate) struct Telemetry {
    /// Counters and gauges.
    pub(crate) metrics: Metrics,
    /// The EVE log (flow, http and alert events).
    pub(crate) flows: FlowLog,
    /// What `/healthz` says.
    pub(crate) health: Health,
    /// Floods of one kind of flow, folded.
    folds: Folds,
}

impl Telemetry {
    /// Telemetry writing to `flows`.
    pub(crate) fn new(metrics: Metrics, flows: FlowLog) -> Telemetry {
        Telemetry {
            metrics,
            flows,
            health: Health::default(),
            folds: Folds::default(),
        }
    }

    /// Writes a flow record; a `foldable` one (a denial, a packet flow) may be folded into
    /// an aggregate when its kind floods.
    pub(crate) fn flow(&self, event: FlowEvent, foldable: bool) {
        if !foldable {
            self.flows.event(&event);
            return;
        }
        let offered = self.folds.offer(event, SystemTime::now(), Instant::now());
        if offered.folded {
            self.metrics.records_aggregated.inc();
        }
        for e in &offered.write {
            self.flows.event(e);
        }
    }

    /// Writes the aggregate records of the windows that closed.
    pub(crate) fn flush_folds(&self) {
        for e in self.folds.flush(Instant::now()) {
            self.flows.event(&e);
        }
    }

    /// Writes the aggregate records of every window (the node stops).
    pub(crate) fn flush_all_folds(&self) {
        for e in self.folds.flush_all() {
            self.flows.event(&e);
        }
    }

    /// Telemetry without a log file, for tests.
    #[cfg(test)]
    pub(crate) fn detached() -> std::sync::Arc<Telemetry> {
        std::sync::Arc::new(Telemetry::new(
            Metrics::default(),
            FlowLog::open(
                None,
                64,
                Default::default(),
                Default::default(),
                Default::default(),
            )
            .unwrap(),
        ))
    }
}
