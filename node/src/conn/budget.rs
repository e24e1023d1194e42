//! Connection budgets: how many connections (TCP connections, tunnel streams, UDP sessions)
//! the node carries at once, and how many of them one workload may hold, so that one
//! workload opening connections without end cannot take every file descriptor and starve
//! the others. An allowed connection takes a [`Slot`] before it is carried and gives it back
//! when it ends; without one it is refused (reset, or a tunnel answer), recorded and
//! counted. The node-wide budget follows the open-file limit (each carried connection holds
//! about two descriptors), less a reserve for the node's own work (tunnel, admin, logs,
//! reloads); running into it makes the node report degraded health.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::telemetry::Telemetry;
use crate::telemetry::metrics::WorkloadLabels;

/// Descriptors one carried connection holds (the client's socket and the upstream one).
const DESCRIPTORS_PER_CONNECTION: u64 = 2;

/// Who a connection counts against: the source workload, or the source address when it is
/// no workload of the registry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Holder {
    /// A workload of the registry, by name.
    Workload(Arc<str>),
    /// An address outside the registry.
    Address(IpAddr),
}

impl Holder {
    /// The label metrics use (addresses share one, so a scan cannot blow up the series).
    fn label(&self) -> String {
        match self {
            Holder::Workload(name) => name.to_string(),
            Holder::Address(_) => "(unregistered)".to_owned(),
        }
    }
}

/// Why a connection found no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shortage {
    /// Its workload holds its whole budget.
    WorkloadBudget,
    /// The node holds as many connections as its descriptors allow.
    Descriptors,
    /// The node is stopping: it carries on what it has, and takes nothing new.
    Stopping,
}

impl Shortage {
    /// The name records and metrics use.
    pub(crate) fn code(self) -> &'static str {
        match self {
            Shortage::WorkloadBudget => "workload-connection-budget",
            Shortage::Descriptors => "node-out-of-descriptors",
            Shortage::Stopping => "node-stopping",
        }
    }
}

/// The budgets, in connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Connections the node carries at once.
    pub(crate) node: usize,
    /// Connections one workload holds at once.
    pub(crate) per_workload: usize,
    /// The open-file limit they were derived from.
    pub(crate) open_files: u64,
}

impl Limits {
    /// The budgets for an open-file limit of `open_files`, keeping `reserved` descriptors for
    /// the node's own work; `per_workload` 0 means a quarter of the node's budget.
    pub(crate) fn derive(open_files: u64, reserved: u64, per_workload: usize) -> Limits {
        let node = (open_files.saturating_sub(reserved) / DESCRIPTORS_PER_CONNECTION).max(1);
        let node = usize::try_from(node).unwrap_or(usize::MAX);
        let per_workload = match per_workload {
            0 => (node / 4).max(1),
            n => n,
        };
        Limits {
            node,
            per_workload,
            open_files,
        }
    }

    /// The limits in words (for `/healthz`).
    pub(crate) fn describe(&self) -> String {
        format!(
            "open-file limit {}, at most {} connections, {} per workload",
            self.open_files, self.node, self.per_workload
        )
    }
}

#[derive(Default)]
struct Held {
    total: usize,
    by_holder: HashMap<Holder, usize>,
}

/// The node's connection budgets and what is held of them.
pub(crate) struct Budgets {
    limits: Limits,
    held: Mutex<Held>,
    /// Set when the node stops: no slot is given any more.
    stopping: std::sync::atomic::AtomicBool,
    telemetry: Arc<Telemetry>,
}

/// A connection's place in the budgets, given back when it is dropped.
pub(crate) struct Slot {
    budgets: Arc<Budgets>,
    holder: Holder,
}

impl Budgets {
    /// Budgets with these limits, counted in `telemetry`.
    pub(crate) fn new(limits: Limits, telemetry: Arc<Telemetry>) -> Arc<Budgets> {
        let m = &telemetry.metrics;
        m.connection_budget.set(limits.node as i64);
        m.open_files_limit.set(limits.open_files as i64);
        Arc::new(Budgets {
            limits,
            held: Mutex::new(Held::default()),
            stopping: Default::default(),
            telemetry,
        })
    }

    /// The limits in force.
    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }

    /// A slot for one more connection of `holder`, or why there is none (counted; a
    /// node-wide shortage also makes the node's health degraded).
    pub(crate) fn take(self: &Arc<Self>, holder: Holder) -> Result<Slot, Shortage> {
        let m = &self.telemetry.metrics;
        let taken = {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            let mine = held.by_holder.get(&holder).copied().unwrap_or(0);
            if self.stopping.load(std::sync::atomic::Ordering::Acquire) {
                Err(Shortage::Stopping)
            } else if held.total >= self.limits.node {
                Err(Shortage::Descriptors)
            } else if mine >= self.limits.per_workload {
                Err(Shortage::WorkloadBudget)
            } else {
                held.total += 1;
                *held.by_holder.entry(holder.clone()).or_default() += 1;
                // Set under the lock: two connections cannot leave the gauge out of order.
                m.connections_held.set(held.total as i64);
                Ok(())
            }
        };
        match taken {
            Ok(()) => Ok(Slot {
                budgets: self.clone(),
                holder,
            }),
            Err(shortage) => {
                self.refused(shortage, Some(&holder));
                Err(shortage)
            }
        }
    }

    /// Counts a refusal for lack of resources (`holder` when known); a node-wide one makes
    /// the node's health degraded.
    pub(crate) fn refused(&self, shortage: Shortage, holder: Option<&Holder>) {
        let m = &self.telemetry.metrics;
        m.resource_refusals
            .get_or_create(&WorkloadLabels {
                resource: shortage.code(),
                workload: holder.map_or_else(String::new, Holder::label),
            })
            .inc();
        if shortage == Shortage::Descriptors {
            self.telemetry.health.out_of_descriptors();
        }
    }

    /// The node is stopping: every connection asking for a slot from now on is refused.
    pub(crate) fn stop(&self) {
        // Under the lock: once it returns, `held` only goes down.
        let _held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        self.stopping
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Connections holding a slot now.
    pub(crate) fn held(&self) -> usize {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).total
    }

    fn give_back(&self, holder: &Holder) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.total = held.total.saturating_sub(1);
        if let Some(n) = held.by_holder.get_mut(holder) {
            *n -= 1;
            if *n == 0 {
                held.by_holder.remove(holder);
            }
        }
        self.telemetry
            .metrics
            .connections_held
            .set(held.total as i64);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.budgets.give_back(&self.holder);
    }
}

/// Whether `e` says the process (or the system) is out of file descriptors.
pub(crate) fn out_of_descriptors(e: &std::io::Error) -> bool {
    use nix::errno::Errno;
    matches!(e.raw_os_error(), Some(n) if n == Errno::EMFILE as i32 || n == Errno::ENFILE as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_follow_the_open_file_limit() {
        let l = Limits::derive(1024, 256, 0);
        assert_eq!((l.node, l.per_workload), (384, 96));
        let l = Limits::derive(1024, 256, 1000);
        assert_eq!(
            (l.node, l.per_workload),
            (384, 1000),
            "an explicit budget stays"
        );
        let l = Limits::derive(100, 256, 0);
        assert_eq!(
            (l.node, l.per_workload),
            (1, 1),
            "never zero: the node still serves"
        );
    }

    #[test]
    fn one_workload_cannot_take_every_slot() {
        let t = Telemetry::detached();
        t.health.set_ready();
        let b = Budgets::new(
            Limits {
                node: 5,
                per_workload: 3,
                open_files: 0,
            },
            t.clone(),
        );
        let greedy = Holder::Workload("greedy".into());
        let other = Holder::Workload("other".into());
        let mut held: Vec<Slot> = (0..3).map(|_| b.take(greedy.clone()).unwrap()).collect();
        assert_eq!(b.take(greedy.clone()).err(), Some(Shortage::WorkloadBudget));
        held.push(b.take(other.clone()).unwrap());
        held.push(
            b.take(Holder::Address("10.9.9.9".parse().unwrap()))
                .unwrap(),
        );
        assert_eq!(b.take(other.clone()).err(), Some(Shortage::Descriptors));
        assert!(matches!(
            t.health.status("x"),
            crate::telemetry::health::HealthStatus::Degraded(_)
        ));
        // Slots come back when connections end.
        held.truncate(2);
        assert!(b.take(other.clone()).is_ok());
        assert!(b.take(greedy.clone()).is_ok());
        let text = t.metrics.encode();
        assert!(
            text.contains("eastwall_resource_refusals_total{resource=\"workload-connection-budget\",workload=\"greedy\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("eastwall_resource_refusals_total{resource=\"node-out-of-descriptors\",workload=\"other\"} 1"),
            "{text}"
        );
        drop(held);
        assert_eq!(b.held.lock().unwrap().total, 0);
        assert!(b.held.lock().unwrap().by_holder.is_empty());
    }

    #[test]
    fn a_stopping_node_keeps_what_it_holds_and_takes_nothing_new() {
        let t = Telemetry::detached();
        let b = Budgets::new(
            Limits {
                node: 5,
                per_workload: 5,
                open_files: 0,
            },
            t.clone(),
        );
        let w = Holder::Workload("w".into());
        let kept = b.take(w.clone()).unwrap();
        b.stop();
        assert_eq!(b.take(w.clone()).err(), Some(Shortage::Stopping));
        assert_eq!(b.held(), 1);
        drop(kept);
        assert_eq!(b.held(), 0);
        let text = t.metrics.encode();
        assert!(
            text.contains(
                "eastwall_resource_refusals_total{resource=\"node-stopping\",workload=\"w\"} 1"
            ),
            "{text}"
        );
    }
}
