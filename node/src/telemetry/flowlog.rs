//! The node's EVE log: every event (`flow`, `http`, `alert`, shaped by `eastwall_wire::eve`)
//! as one JSON line appended to a file, and a ring of the recent ones for the admin
//! endpoint's `/flows`.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{LineWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use serde::Serialize;

/// Where records go: an append-only JSON-lines file and a ring of recent ones for `/flows`.
pub(crate) struct FlowLog {
    file: Option<Mutex<LineWriter<File>>>,
    recent: Mutex<VecDeque<String>>,
    capacity: usize,
    next_id: AtomicU64,
    write_errors: prometheus_client::metrics::counter::Counter,
}

impl FlowLog {
    /// Opens (creating folders as needed) the log at `path`; records that cannot be written
    /// are counted in `write_errors`.
    pub(crate) fn open(
        path: Option<&Path>,
        capacity: usize,
        write_errors: prometheus_client::metrics::counter::Counter,
    ) -> anyhow::Result<FlowLog> {
        let file = match path {
            Some(p) => {
                if let Some(dir) = p.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let f = OpenOptions::new().create(true).append(true).open(p)?;
                Some(Mutex::new(LineWriter::new(f)))
            }
            None => None,
        };
        // Flow ids only need to be unique per node run; seeding from the clock keeps ids of
        // consecutive runs apart in a shared SIEM.
        let micros = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let seed = micros << 16;
        Ok(FlowLog {
            file,
            recent: Mutex::new(VecDeque::with_capacity(capacity.min(4096))),
            capacity,
            next_id: AtomicU64::new(seed),
            write_errors,
        })
    }

    /// A fresh flow id.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Writes any EVE event (flow, http, alert): one line in the file and in the ring.
    pub(crate) fn event(&self, rec: &impl Serialize) {
        let line = match serde_json::to_string(rec) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("serializing a flow record: {e}");
                return;
            }
        };
        if let Some(f) = &self.file {
            let mut f = f.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = writeln!(f, "{line}") {
                self.write_errors.inc();
                tracing::error!("writing the flow log: {e}");
            }
        }
        let mut r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if r.len() >= self.capacity {
            r.pop_front();
        }
        if self.capacity > 0 {
            r.push_back(line);
        }
    }

    /// The most recent records, oldest first, as a JSON array.
    pub(crate) fn recent_json(&self, limit: usize) -> String {
        let r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let skip = r.len().saturating_sub(limit);
        let mut out = String::from("[");
        for (i, l) in r.iter().skip(skip).enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(l);
        }
        out.push(']');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Event {
        flow_id: u64,
        event_type: &'static str,
    }

    #[test]
    fn each_event_is_one_line_and_the_ring_keeps_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/flows.json");
        let log = FlowLog::open(Some(&path), 2, Default::default()).unwrap();
        let first = log.next_id();
        assert_eq!(log.next_id(), first + 1, "ids are consecutive");
        for i in 0..3 {
            log.event(&Event {
                flow_id: i,
                event_type: "flow",
            });
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3);
        let v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(v["event_type"], "flow");
        // The ring keeps the last two.
        let recent: Vec<serde_json::Value> = serde_json::from_str(&log.recent_json(10)).unwrap();
        assert_eq!(recent.len(), 2);
        assert_eq!(recent[1]["flow_id"], 2);
        let one: Vec<serde_json::Value> = serde_json::from_str(&log.recent_json(1)).unwrap();
        assert_eq!(one[0]["flow_id"], 2);
    }
}
