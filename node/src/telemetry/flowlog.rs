//! The node's EVE log: every event (`flow`, `http`, `dns`, `alert`, shaped by
//! `eastwall_wire::eve`) as one JSON line appended to a file, and a ring of the recent ones
//! for the admin endpoint's `/flows`. The file is rotated by size (`flowLog.maxBytes`,
//! `flowLog.keep`), so a flood of records cannot fill the disk.
//!
//! Off the data path: a worker thread only serializes a record and hands the line to a
//! bounded queue ([`QUEUE_RECORDS`]); a thread of its own writes the queue to the file, many
//! lines per write. When the disk is slower than the records come, the queue fills and
//! further records are dropped from the file (never waited for), counted in
//! `eastwall_flow_log_dropped_total`; `/flows` and the metrics still see them.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;

/// Records waiting for the file at most (about 16 MiB of typical flow records).
pub(crate) const QUEUE_RECORDS: usize = 16_384;
/// Bytes gathered into one write at most.
const BATCH_BYTES: usize = 256 * 1024;

/// Where records go: an append-only JSON-lines file (through its writer thread) and a ring
/// of recent ones for `/flows`.
pub(crate) struct FlowLog {
    file: Option<SyncSender<ToWriter>>,
    recent: Mutex<VecDeque<String>>,
    capacity: usize,
    next_id: AtomicU64,
    dropped: Counter,
    /// The exporter's backlog (records for the collector), and what it could not take.
    export: Option<(tokio::sync::mpsc::Sender<String>, Counter)>,
}

/// Flow ids are 51 bits, as Suricata's: JavaScript tools (Kibana) read JSON numbers as
/// doubles, exact to 2^53 only, and ids that round no longer join a flow's events.
const FLOW_ID_MASK: u64 = (1 << 51) - 1;

/// Where a node run starts counting flow ids: random, so that the ranges of the fleet's
/// nodes (and of one node's restarts) do not meet in a shared SIEM. Two runs that each
/// write k ids collide with probability about 2k / 2^51 (k = 10^9: 1 in a million).
fn random_flow_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // std's hasher keys are drawn from the OS's random source once per process; the clock
    // and the pid separate two keys that happen to repeat.
    let mut h = std::hash::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish() & FLOW_ID_MASK
}

/// What the writer thread is given.
enum ToWriter {
    Line(String),
    /// Answer once everything queued before is written.
    Flush(std::sync::mpsc::Sender<()>),
}

/// The log file, its size as far as this node wrote it, and how it is rotated.
struct LogFile {
    path: PathBuf,
    /// Unbuffered: each record goes out in one write, so a reader never sees half a line.
    out: File,
    written: u64,
    rotation: Rotation,
}

/// When and how the log file is rotated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rotation {
    /// Size past which the file is rotated.
    pub(crate) max_bytes: u64,
    /// Rotated files kept (`PATH.1` the newest); 0: the file starts over.
    pub(crate) keep: u32,
}

impl Default for Rotation {
    /// The node config's defaults.
    fn default() -> Self {
        let spec = crate::config::FlowLogSpec::default();
        Rotation {
            max_bytes: spec.max_bytes,
            keep: spec.keep,
        }
    }
}

impl LogFile {
    fn open(path: &Path, rotation: Rotation) -> std::io::Result<LogFile> {
        let f = OpenOptions::new().create(true).append(true).open(path)?;
        let written = f.metadata()?.len();
        Ok(LogFile {
            path: path.to_owned(),
            out: f,
            written,
            rotation,
        })
    }

    /// Appends `lines`, each whole, in as few writes as the rotation allows: the file is
    /// rotated before a line that would take it past its size.
    fn write_lines(&mut self, lines: &[String]) -> std::io::Result<()> {
        let mut batch = String::new();
        for line in lines {
            let len = line.len() as u64 + 1;
            if self.written + batch.len() as u64 + len > self.rotation.max_bytes {
                self.out.write_all(batch.as_bytes())?;
                self.written += batch.len() as u64;
                batch.clear();
                // The file may have been truncated meanwhile (logrotate's `copytruncate`).
                self.written = self.out.metadata()?.len();
                if self.written + len > self.rotation.max_bytes {
                    self.rotate()?;
                }
            }
            batch.push_str(line);
            batch.push('\n');
        }
        self.out.write_all(batch.as_bytes())?;
        self.written += batch.len() as u64;
        Ok(())
    }

    /// `PATH.(keep-1)` → `PATH.keep`, ..., `PATH` → `PATH.1`, then a new `PATH`.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        let numbered = |n: u32| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{n}"));
            PathBuf::from(p)
        };
        if self.rotation.keep == 0 {
            self.out.set_len(0)?;
        } else {
            for n in (1..self.rotation.keep).rev() {
                let from = numbered(n);
                if from.exists() {
                    std::fs::rename(&from, numbered(n + 1))?;
                }
            }
            std::fs::rename(&self.path, numbered(1))?;
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            self.out = f;
        }
        self.written = 0;
        Ok(())
    }
}

impl FlowLog {
    /// Opens (creating folders as needed) the log at `path`, rotated as `rotation` says, and
    /// starts its writer thread; records that cannot be written are counted in
    /// `write_errors`, records dropped for a full queue in `dropped`.
    pub(crate) fn open(
        path: Option<&Path>,
        capacity: usize,
        rotation: Rotation,
        write_errors: Counter,
        dropped: Counter,
    ) -> anyhow::Result<FlowLog> {
        FlowLog::with_queue(
            path,
            capacity,
            rotation,
            write_errors,
            dropped,
            QUEUE_RECORDS,
        )
    }

    fn with_queue(
        path: Option<&Path>,
        capacity: usize,
        rotation: Rotation,
        write_errors: Counter,
        dropped: Counter,
        queue: usize,
    ) -> anyhow::Result<FlowLog> {
        let file = match path {
            Some(p) => {
                if let Some(dir) = p.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let file = LogFile::open(p, rotation)?;
                let (tx, rx) = std::sync::mpsc::sync_channel(queue);
                std::thread::Builder::new()
                    .name("eastwall-flowlog".into())
                    .spawn(move || write_queue(file, rx, write_errors))?;
                Some(tx)
            }
            None => None,
        };
        Ok(FlowLog {
            file,
            recent: Mutex::new(VecDeque::with_capacity(capacity.min(4096))),
            capacity,
            next_id: AtomicU64::new(random_flow_id()),
            dropped,
            export: None,
        })
    }

    /// This log, also handing every record to `backlog` (the exporter's); records it has no
    /// room for are counted in `dropped`.
    pub(crate) fn with_export(
        mut self,
        backlog: tokio::sync::mpsc::Sender<String>,
        dropped: Counter,
    ) -> FlowLog {
        self.export = Some((backlog, dropped));
        self
    }

    /// Waits (at most `within`) until every record queued so far is in the file: when the
    /// node stops, and in tests.
    pub(crate) fn flush(&self, within: Duration) -> bool {
        let Some(tx) = &self.file else {
            return true;
        };
        let deadline = std::time::Instant::now() + within;
        let (done, wait) = std::sync::mpsc::channel();
        // The queue may be full: wait for room, but not past `within`.
        let mut msg = ToWriter::Flush(done);
        loop {
            match tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) if std::time::Instant::now() < deadline => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(_) => return false,
            }
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        wait.recv_timeout(left).is_ok()
    }

    /// A fresh flow id.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) & FLOW_ID_MASK
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
        if let Some((backlog, dropped)) = &self.export
            && backlog.try_send(line.clone()).is_err()
        {
            dropped.inc();
        }
        if self.capacity > 0 {
            let mut r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            if r.len() >= self.capacity {
                r.pop_front();
            }
            r.push_back(line.clone());
        }
        if let Some(tx) = &self.file {
            // Full: the disk is behind. Disconnected: the writer thread is gone (it
            // panicked). Either way the record does not reach the file, and is counted.
            if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
                tx.try_send(ToWriter::Line(line))
            {
                self.dropped.inc();
            }
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

/// The writer thread: takes what is queued, as much as is there (up to [`BATCH_BYTES`]), and
/// writes it; ends when the log is dropped.
fn write_queue(mut file: LogFile, rx: Receiver<ToWriter>, write_errors: Counter) {
    let mut lines: Vec<String> = Vec::new();
    let mut flushes = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut bytes = 0;
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                ToWriter::Line(l) => {
                    bytes += l.len() + 1;
                    lines.push(l);
                }
                ToWriter::Flush(done) => flushes.push(done),
            }
            if bytes < BATCH_BYTES && flushes.is_empty() {
                next = rx.try_recv().ok();
            }
        }
        if let Err(e) = file.write_lines(&lines) {
            write_errors.inc_by(lines.len() as u64);
            tracing::error!("writing the flow log: {e}");
        }
        lines.clear();
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
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

    const ROOMY: Rotation = Rotation {
        max_bytes: 1 << 20,
        keep: 2,
    };

    #[test]
    fn flow_ids_are_51_bits_and_runs_start_apart() {
        let open =
            || FlowLog::open(None, 0, ROOMY, Default::default(), Default::default()).unwrap();
        let (a, b) = (open(), open());
        let (first_a, first_b) = (a.next_id(), b.next_id());
        assert!(first_a <= FLOW_ID_MASK && first_b <= FLOW_ID_MASK);
        // Two random 51-bit starts are equal once in 2^51 runs.
        assert_ne!(first_a, first_b);
        assert_eq!(a.next_id(), (first_a + 1) & FLOW_ID_MASK);
        // The count wraps inside 51 bits, never above.
        a.next_id.store(FLOW_ID_MASK, Ordering::Relaxed);
        assert_eq!(a.next_id(), FLOW_ID_MASK);
        assert_eq!(a.next_id(), 0);
        assert_eq!(a.next_id(), 1);
    }

    #[test]
    fn the_file_is_rotated_by_size_and_keeps_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flows.json");
        let rotation = Rotation {
            max_bytes: 100,
            keep: 2,
        };
        let log = FlowLog::open(
            Some(&path),
            0,
            rotation,
            Default::default(),
            Default::default(),
        )
        .unwrap();
        // Each line is 40 bytes: two fit in 100, the third rotates.
        for i in 0..10 {
            log.event(&Event {
                flow_id: 1_000_000 + i,
                event_type: "flow",
            });
        }
        assert!(log.flush(Duration::from_secs(5)));
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let numbered = |n: u32| dir.path().join(format!("flows.json.{n}"));
        for p in [path.clone(), numbered(1), numbered(2)] {
            let text = read(&p);
            assert!(text.len() <= 100, "{}: {} bytes", p.display(), text.len());
            for l in text.lines() {
                serde_json::from_str::<serde_json::Value>(l).unwrap();
            }
        }
        assert!(!numbered(3).exists(), "only `keep` rotated files");
        // The newest events are in the file, the ones before in .1, then .2.
        assert!(read(&path).contains("1000009"));
        assert!(read(&numbered(1)).contains("1000007"));
        assert!(read(&numbered(2)).contains("1000005"));
        // With nothing kept the file starts over.
        let once = dir.path().join("once.json");
        let rotation = Rotation {
            max_bytes: 100,
            keep: 0,
        };
        let log = FlowLog::open(
            Some(&once),
            0,
            rotation,
            Default::default(),
            Default::default(),
        )
        .unwrap();
        for i in 0..5 {
            log.event(&Event {
                flow_id: 1_000_000 + i,
                event_type: "flow",
            });
        }
        assert!(log.flush(Duration::from_secs(5)));
        assert_eq!(read(&once).lines().count(), 1);
    }

    #[test]
    fn each_event_is_one_line_and_the_ring_keeps_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/flows.json");
        let log = FlowLog::open(
            Some(&path),
            2,
            ROOMY,
            Default::default(),
            Default::default(),
        )
        .unwrap();
        let first = log.next_id();
        assert_eq!(log.next_id(), first + 1, "ids are consecutive");
        for i in 0..3 {
            log.event(&Event {
                flow_id: i,
                event_type: "flow",
            });
        }
        assert!(log.flush(Duration::from_secs(5)));
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

    #[test]
    fn a_full_queue_drops_and_counts_and_loses_nothing_silently() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flows.json");
        let dropped = Counter::default();
        // A queue of one record: the writer cannot keep up with a tight loop.
        let log = FlowLog::with_queue(
            Some(&path),
            0,
            ROOMY,
            Default::default(),
            dropped.clone(),
            1,
        )
        .unwrap();
        let sent = 20_000u64;
        let t = std::time::Instant::now();
        for i in 0..sent {
            log.event(&Event {
                flow_id: i,
                event_type: "flow",
            });
        }
        let took = t.elapsed();
        assert!(log.flush(Duration::from_secs(10)));
        let written = std::fs::read_to_string(&path).unwrap().lines().count() as u64;
        assert_eq!(
            written + dropped.get(),
            sent,
            "written {written}, dropped {}",
            dropped.get()
        );
        assert!(written >= 1);
        eprintln!(
            "{sent} events in {took:?}: {written} written, {} dropped",
            dropped.get()
        );
    }
}
