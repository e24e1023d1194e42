//! The node's side of the collector: its records, sent in batches.
//!
//! The flow log hands every record to a bounded backlog (`export.backlogRecords`) and never
//! waits; this task takes from it up to [`BATCH_RECORDS`] records or [`BATCH_BYTES`] at a
//! time, waiting at most [`LINGER`] for a batch to fill, and POSTs them with the node's certificate. A batch the collector cannot take (it is
//! down, slow, or answers with an error) is kept and sent again, after 0.5 s doubling to 5 s,
//! while new records wait in the backlog; when the backlog is full, new records are dropped
//! and counted. Nothing within the backlog's bounds (and the one batch being sent, at most
//! as large) is lost; a batch whose answer was lost
//! may arrive twice. `eastwall_flow_export_records_total{result}` counts `sent`, `rejected`
//! (lines the collector refused, with its reason logged) and `dropped`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use eastwall_certs::{Identity, TrustBundle};
use hyper::Method;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::mpsc::Receiver;
use tracing::{info, warn};

use super::{MAX_BATCH, RECORDS_PATH, collector_id};
use crate::config::ExportSpec;
use crate::mtls::{Call, Endpoint};
use crate::telemetry::metrics::ResultLabels;

/// Records sent at most in one batch.
pub const BATCH_RECORDS: usize = 2_000;
/// Bytes sent at most in one batch.
const BATCH_BYTES: usize = 1 << 20;
/// The longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Longest a record waits for others to share its batch.
pub const LINGER: Duration = Duration::from_millis(250);

/// Sends what `backlog` holds to the collector of `spec` until the backlog closes.
/// `in_flight` says how many records it holds taken from the backlog and not yet sent (the
/// node waits for 0 before it stops).
pub(crate) async fn export(
    spec: ExportSpec,
    bundle: TrustBundle,
    mark: Option<u32>,
    mut backlog: Receiver<String>,
    counts: Family<ResultLabels, Counter>,
    in_flight: Arc<AtomicUsize>,
) {
    let (endpoint, server) = match (
        Endpoint::parse(&spec.url),
        collector_id(bundle.trust_domain()),
    ) {
        (Ok(e), Ok(s)) => (e, s),
        (Err(e), _) | (_, Err(e)) => {
            warn!("export: {e:#}; records are not exported");
            return;
        }
    };
    let count = |result: &'static str, n: usize| {
        counts
            .get_or_create(&ResultLabels { result })
            .inc_by(n as u64);
    };
    // What is kept while the collector is away: the backlog, and one batch no larger.
    let max_batch = BATCH_RECORDS.min(spec.backlog_records.max(1));
    let mut batch: Vec<String> = Vec::new();
    let mut backoff = Duration::from_millis(500);
    let mut failing = false;
    loop {
        if batch.is_empty() {
            in_flight.store(0, Ordering::Release);
            match backlog.recv().await {
                Some(line) => {
                    batch.push(line);
                    in_flight.store(1, Ordering::Release);
                }
                None => return,
            }
        }
        // The batch fills for up to LINGER: each batch costs a TLS handshake (~0.4 ms of CPU
        // here), so a busy node sends a few full batches a second, not one per record.
        let mut bytes: usize = batch.iter().map(|l| l.len() + 1).sum();
        // A batch being retried takes no more: new records wait in the backlog, whose bound
        // is what the operator set.
        let linger = tokio::time::Instant::now() + LINGER;
        while !failing && batch.len() < max_batch && bytes < BATCH_BYTES {
            match tokio::time::timeout_at(linger, backlog.recv()).await {
                Ok(Some(line)) => {
                    bytes += line.len() + 1;
                    batch.push(line);
                    // Taken counts as in flight: a stopping node waits for it.
                    in_flight.store(batch.len(), Ordering::Release);
                }
                // Stopping (the log closed the backlog), or long enough.
                Ok(None) | Err(_) => break,
            }
        }
        in_flight.store(batch.len(), Ordering::Release);
        let body = Bytes::from(batch.join("\n"));
        debug_assert!(body.len() <= MAX_BATCH);
        let sent = match node_identity(&spec.node_cert, &spec.node_key) {
            Ok(me) => {
                let call = Call {
                    method: Method::POST,
                    path: RECORDS_PATH,
                    content_type: "application/x-ndjson",
                    body,
                    max_answer: 64 * 1024,
                    timeout: Duration::from_secs(30),
                    bearer: None,
                };
                crate::mtls::request(&endpoint, Some(me), &bundle, &server, call, mark).await
            }
            Err(e) => Err(e),
        };
        match sent {
            Ok(a) if a.status == 200 => {
                let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap_or_default();
                let rejected = v["rejected"].as_u64().unwrap_or(0) as usize;
                if rejected > 0 {
                    warn!(
                        rejected,
                        "the collector refused records: {}",
                        v["problems"][0].as_str().unwrap_or("?")
                    );
                }
                count("sent", batch.len().saturating_sub(rejected));
                count("rejected", rejected);
                batch.clear();
                in_flight.store(0, Ordering::Release);
                if failing {
                    info!("export: the collector takes records again");
                    failing = false;
                }
                backoff = Duration::from_millis(500);
            }
            other => {
                let why = match other {
                    Ok(a) => format!(
                        "answered {}: {}",
                        a.status,
                        String::from_utf8_lossy(&a.body).trim()
                    ),
                    Err(e) => format!("{e:#}"),
                };
                if !failing {
                    warn!(
                        collector = %endpoint.authority,
                        "export: {why}; keeping records (at most {}) and trying again",
                        spec.backlog_records
                    );
                    failing = true;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// The node certificate, read now (it may have been renewed in place).
fn node_identity(cert: &PathBuf, key: &PathBuf) -> anyhow::Result<Identity> {
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("reading {}: {e}", p.display()))
    };
    Identity::from_pem(&read(cert)?, &read(key)?)
        .map_err(|e| anyhow::anyhow!("{}: {e}", cert.display()))
}
