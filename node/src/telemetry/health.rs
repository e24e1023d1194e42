//! The node's health as `/healthz` reports it: ready once capture is installed, and
//! degraded while the node refuses new connections for lack of resources (file descriptors),
//! that is for [`DEGRADED_FOR`] after the last such refusal.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long one refusal for lack of resources keeps the node degraded.
pub(crate) const DEGRADED_FOR: Duration = Duration::from_secs(10);

/// What `/healthz` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HealthStatus {
    /// Capture is not installed yet.
    Starting,
    /// Serving.
    Ok,
    /// Serving, but refusing new connections for lack of resources: why, in words.
    Degraded(String),
    /// Stopping: carrying on the connections it has, refusing new ones.
    Stopping,
}

/// Readiness and the last refusal for lack of resources.
pub(crate) struct Health {
    ready: AtomicBool,
    stopping: AtomicBool,
    epoch: Instant,
    /// Milliseconds since `epoch` of the last refusal, plus one (0: never).
    last_shortage_ms: AtomicU64,
    /// Refusals since the node started.
    shortages: AtomicU64,
    /// Why the last reload of the registry and policy was refused (cleared by one that
    /// applies): what the node's status in the central store reports.
    reload_refused: std::sync::Mutex<Option<String>>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            ready: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            epoch: Instant::now(),
            last_shortage_ms: AtomicU64::new(0),
            shortages: AtomicU64::new(0),
            reload_refused: std::sync::Mutex::new(None),
        }
    }
}

impl Health {
    /// Capture is installed: the node serves.
    pub(crate) fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// The node is stopping: not ready any more (a load balancer, a readiness probe, looks
    /// elsewhere).
    pub(crate) fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// A new connection was refused because the node is out of file descriptors.
    pub(crate) fn out_of_descriptors(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64 + 1;
        self.last_shortage_ms.store(ms, Ordering::Relaxed);
        self.shortages.fetch_add(1, Ordering::Relaxed);
    }

    /// Records how the last reload ended: `None` applied, `Some(why)` refused.
    pub(crate) fn reload_ended(&self, refused: Option<String>) {
        *self
            .reload_refused
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = refused;
    }

    /// Why the last reload was refused, if it was.
    pub(crate) fn reload_refused(&self) -> Option<String> {
        self.reload_refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The status now; `limits` describes the node's limits for a degraded answer.
    pub(crate) fn status(&self, limits: &str) -> HealthStatus {
        self.status_at(self.epoch.elapsed(), limits)
    }

    fn status_at(&self, now: Duration, limits: &str) -> HealthStatus {
        if self.stopping.load(Ordering::Acquire) {
            return HealthStatus::Stopping;
        }
        if !self.ready.load(Ordering::Acquire) {
            return HealthStatus::Starting;
        }
        let last = self.last_shortage_ms.load(Ordering::Relaxed);
        if last == 0 {
            return HealthStatus::Ok;
        }
        let ago = now.saturating_sub(Duration::from_millis(last - 1));
        if ago >= DEGRADED_FOR {
            return HealthStatus::Ok;
        }
        HealthStatus::Degraded(format!(
            "refusing new connections: out of file descriptors {:.1} s ago ({} refusals since start; {limits})",
            ago.as_secs_f64(),
            self.shortages.load(Ordering::Relaxed),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degraded_for_a_while_after_a_shortage() {
        let h = Health::default();
        assert_eq!(h.status_at(Duration::ZERO, ""), HealthStatus::Starting);
        h.set_ready();
        assert_eq!(h.status_at(Duration::from_secs(1), ""), HealthStatus::Ok);
        h.out_of_descriptors();
        let at = h.epoch.elapsed();
        match h.status_at(at + Duration::from_secs(2), "limit 1024") {
            HealthStatus::Degraded(why) => {
                assert!(why.contains("file descriptors"), "{why}");
                assert!(why.contains("1 refusals"), "{why}");
                assert!(why.contains("limit 1024"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(h.status_at(at + DEGRADED_FOR, ""), HealthStatus::Ok);
        h.set_stopping();
        assert_eq!(h.status_at(at + DEGRADED_FOR, ""), HealthStatus::Stopping);
    }
}
