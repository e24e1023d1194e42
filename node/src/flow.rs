//! Flow records: one per connection, written as a JSON line when it closes, in the shape of
//! Suricata's EVE `flow` event with an `eastwall` object for who was on each end and why the
//! connection was allowed or denied.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{LineWriter, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use eastwall_policy::{Decision, Workload};
use serde::Serialize;

/// EVE's timestamp format.
pub fn eve_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f%z").to_string()
}

/// Which listener captured the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Opened by a workload (or process) on this host.
    Outbound,
    /// Arriving for a workload on this host.
    Inbound,
}

impl Direction {
    /// Lowercase name, for metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

/// One end of a flow as eastwall knows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EndpointInfo {
    /// Registry workload name, if the address belongs to one.
    pub workload: Option<String>,
    /// The workload's app.
    pub app: Option<String>,
    /// The workload's zone.
    pub zone: Option<String>,
    /// The node the workload runs on.
    pub node: Option<String>,
    /// The SPIFFE identity: proven by a certificate (tunnel peer, or this node's own
    /// workload), or the registry's expectation for a destination.
    pub identity: Option<String>,
    /// The user this end acts for (from its certificate at a tunnel's destination).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The user's directory groups the decision used (absent: no user, or unknown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
}

impl EndpointInfo {
    /// Describes `w` (or an address outside the registry).
    pub fn of(w: Option<&Workload>) -> Self {
        EndpointInfo {
            workload: w.map(|w| w.name.clone()),
            app: w.and_then(|w| w.app.clone()),
            zone: w.and_then(|w| w.zone.clone()),
            node: w.map(|w| w.node.clone()),
            identity: w.map(|w| w.identity.to_string()),
            user: w.and_then(|w| w.user.clone()),
            groups: None,
        }
    }

    /// This end with the groups its user was decided with.
    pub fn with_groups(self, groups: Option<Vec<String>>) -> Self {
        EndpointInfo { groups, ..self }
    }
}

/// How a connection crossed between nodes.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TunnelInfo {
    /// `quic`.
    pub transport: &'static str,
    /// The other node's tunnel address.
    pub peer: String,
    /// The other end's proven identity (the source's at the destination; the destination's
    /// at the source).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_identity: Option<String>,
    /// The destination's answer (`connected`, `denied`, `identity-mismatch`, ...), or
    /// `handshake-failed` / `stream-failed`.
    pub status: String,
    /// Why, when not connected.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// A monitor-mode rule that matched before the deciding one.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MonitorInfo {
    /// Rule id.
    pub rule: String,
    /// Section of the rule.
    pub section: String,
    /// What the rule would have done.
    pub would: String,
}

/// The decision part of a flow record.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PolicyInfo {
    /// `allow` or `deny`.
    pub verdict: String,
    /// Deciding rule id, or `default-deny`, or a reason code such as `unknown-source`.
    pub rule: String,
    /// Section of the deciding rule.
    pub section: Option<String>,
    /// Mode of the deciding rule (`enforce`; monitor rules never decide).
    pub mode: String,
    /// Monitor-mode rules that matched on the way, with what they would have done.
    pub monitor: Vec<MonitorInfo>,
    /// At connection time: rules with L7 conditions apply, so each HTTP request (or the TLS
    /// handshake, or the opaque stream) is decided again; `rule` is then the first rule that
    /// may allow.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub l7_pending: bool,
    /// The IDS profile of the deciding allow rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ids: Option<String>,
}

impl PolicyInfo {
    /// The record of a policy decision.
    pub fn of(d: &Decision) -> Self {
        PolicyInfo {
            verdict: d.action.as_str().to_owned(),
            rule: d.rule_id().to_owned(),
            section: d.rule.as_ref().map(|r| r.section.to_string()),
            mode: "enforce".to_owned(),
            monitor: d
                .monitored
                .iter()
                .map(|m| MonitorInfo {
                    rule: m.rule.id.to_string(),
                    section: m.rule.section.to_string(),
                    would: m.action.as_str().to_owned(),
                })
                .collect(),
            l7_pending: d.needs_l7,
            ids: d.ids.as_deref().map(str::to_owned),
        }
    }

    /// Whether the connection may go on (allowed, or pending L7 decisions that may allow).
    pub fn allows(&self) -> bool {
        self.verdict == "allow"
    }

    /// A denial that happened before policy was consulted (e.g. `unknown-source`).
    pub fn denied_because(reason: &str) -> Self {
        PolicyInfo {
            verdict: "deny".into(),
            rule: reason.into(),
            section: None,
            mode: "enforce".into(),
            monitor: Vec::new(),
            l7_pending: false,
            ids: None,
        }
    }
}

/// EVE's `flow` object.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EveFlow {
    /// Bytes from client to server.
    pub bytes_toserver: u64,
    /// Bytes from server to client.
    pub bytes_toclient: u64,
    /// Start, EVE time.
    pub start: String,
    /// End, EVE time.
    pub end: String,
    /// Whole seconds the flow lived.
    pub age: u64,
    /// `closed`, `rejected` (denied), or `failed` (upstream unreachable).
    pub state: String,
    /// Why it ended: `shutdown`, `denied`, `upstream-error`, `error`.
    pub reason: String,
    /// Whether the IDS raised alerts on the flow.
    pub alerted: bool,
}

/// eastwall's own part of the record.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EastwallInfo {
    /// The node that wrote the record.
    pub node: String,
    /// Which capture saw the connection.
    pub direction: Direction,
    /// The source.
    pub src: EndpointInfo,
    /// The destination.
    pub dest: EndpointInfo,
    /// The decision.
    pub policy: PolicyInfo,
    /// Milliseconds from accept to close.
    pub duration_ms: u64,
    /// An error that ended the flow, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The tunnel, when the connection crossed to or came from another node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<TunnelInfo>,
    /// The rule of a newer policy that ended this allowed connection (hot reload).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<String>,
    /// HTTP requests decided on this connection, and how many were denied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_requests: Option<HttpCounts>,
    /// What the IDS did on this connection (its alerts are `alert` events of the same flow).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ids: Option<crate::ids::IdsInfo>,
}

/// How many HTTP requests a connection carried and how many the node denied.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct HttpCounts {
    /// Requests decided.
    pub requests: u64,
    /// Requests denied (answered by the node with 403, or 400 for a malformed target).
    pub denied: u64,
}

/// EVE's `http` object for one request.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EveHttp {
    /// Host the request named (authority or `Host`), without port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The request target as sent.
    pub url: String,
    /// The normalized path the policy decided on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub normalized_path: Option<String>,
    /// Method.
    pub http_method: String,
    /// `HTTP/1.1`, `HTTP/2`.
    pub protocol: String,
    /// User agent, if sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_user_agent: Option<String>,
    /// Status sent to the client (the node's own 403/400/502, or the server's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Response body length, when known from `content-length`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
}

/// EVE's `tls` object: what the ClientHello said.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EveTls {
    /// Server name (SNI), if sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// Highest version offered (`TLS 1.3`, `TLS 1.2`, ...), or `UNDETERMINED`.
    pub version: String,
    /// ALPN protocols offered.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alpn: Vec<String>,
}

/// One HTTP request's decision (EVE `event_type: http`), written as it completes.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HttpEvent {
    /// When the response (or the node's refusal) was sent.
    pub timestamp: String,
    /// The connection's flow id (its `flow` record has the same).
    pub flow_id: u64,
    /// Always `http`.
    pub event_type: &'static str,
    /// Client address.
    pub src_ip: String,
    /// Client port.
    pub src_port: u16,
    /// Server address.
    pub dest_ip: String,
    /// Server port.
    pub dest_port: u16,
    /// Always `TCP`.
    pub proto: &'static str,
    /// `http` or `http2`.
    pub app_proto: &'static str,
    /// The request.
    pub http: EveHttp,
    /// The decision and who was on each end.
    pub eastwall: HttpDecisionInfo,
}

/// eastwall's part of an [`HttpEvent`].
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HttpDecisionInfo {
    /// The node that decided.
    pub node: String,
    /// Which capture saw the connection.
    pub direction: Direction,
    /// The source's identity, user and groups.
    pub src: EndpointInfo,
    /// The destination.
    pub dest: EndpointInfo,
    /// The decision for this request.
    pub policy: PolicyInfo,
}

/// One flow record (EVE `event_type: flow`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FlowRecord {
    /// When the record was written.
    pub timestamp: String,
    /// Node-unique id of the flow.
    pub flow_id: u64,
    /// Always `flow`.
    pub event_type: &'static str,
    /// Source address.
    pub src_ip: String,
    /// Source port.
    pub src_port: u16,
    /// Destination address.
    pub dest_ip: String,
    /// Destination port.
    pub dest_port: u16,
    /// Always `TCP` for now.
    pub proto: &'static str,
    /// The application protocol the node detected (`http`, `http2`, `tls`, `failed` for
    /// opaque TCP it inspected), absent when it did not look (L4 decisions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_proto: Option<&'static str>,
    /// Byte counts and timing.
    pub flow: EveFlow,
    /// The last HTTP request on the connection (each has its own `http` event too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<EveHttp>,
    /// The TLS handshake the node read (without decrypting).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<EveTls>,
    /// Identities and decision.
    pub eastwall: EastwallInfo,
}

impl FlowRecord {
    /// Starts a record for a connection from `src` to `dst`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        flow_id: u64,
        node: &str,
        direction: Direction,
        src: SocketAddr,
        dst: SocketAddr,
        src_info: EndpointInfo,
        dst_info: EndpointInfo,
        policy: PolicyInfo,
        start: DateTime<Utc>,
    ) -> Self {
        let t = eve_time(start);
        FlowRecord {
            timestamp: t.clone(),
            flow_id,
            event_type: "flow",
            src_ip: src.ip().to_string(),
            src_port: src.port(),
            dest_ip: dst.ip().to_string(),
            dest_port: dst.port(),
            proto: "TCP",
            app_proto: None,
            http: None,
            tls: None,
            flow: EveFlow {
                bytes_toserver: 0,
                bytes_toclient: 0,
                start: t.clone(),
                end: t,
                age: 0,
                state: "new".into(),
                reason: String::new(),
                alerted: false,
            },
            eastwall: EastwallInfo {
                node: node.to_owned(),
                direction,
                src: src_info,
                dest: dst_info,
                policy,
                duration_ms: 0,
                error: None,
                tunnel: None,
                revoked_by: None,
                http_requests: None,
                ids: None,
            },
        }
    }

    /// Adds what the IDS did.
    pub fn with_ids(&mut self, info: Option<crate::ids::IdsInfo>) {
        if let Some(i) = info {
            self.flow.alerted = i.alerts > 0;
            self.eastwall.ids = Some(i);
        }
    }

    /// Completes the record at `end`.
    pub fn finish(&mut self, start: DateTime<Utc>, end: DateTime<Utc>, state: &str, reason: &str) {
        let e = eve_time(end);
        self.timestamp = e.clone();
        self.flow.end = e;
        let ms = (end - start).num_milliseconds().max(0) as u64;
        self.flow.age = ms / 1000;
        self.eastwall.duration_ms = ms;
        self.flow.state = state.into();
        self.flow.reason = reason.into();
    }
}

/// Where records go: an append-only JSON-lines file and a ring of recent ones for `/flows`.
pub struct FlowLog {
    file: Option<Mutex<LineWriter<File>>>,
    recent: Mutex<VecDeque<String>>,
    capacity: usize,
    next_id: AtomicU64,
    write_errors: prometheus_client::metrics::counter::Counter,
}

impl FlowLog {
    /// Opens (creating folders as needed) the log at `path`; records that cannot be written
    /// are counted in `write_errors`.
    pub fn open(
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
        let seed = (Utc::now().timestamp_micros() as u64) << 16;
        Ok(FlowLog {
            file,
            recent: Mutex::new(VecDeque::with_capacity(capacity.min(4096))),
            capacity,
            next_id: AtomicU64::new(seed),
            write_errors,
        })
    }

    /// A fresh flow id.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Records `rec`: one line in the file and in the ring.
    pub fn record(&self, rec: &FlowRecord) {
        self.event(rec);
    }

    /// Writes any EVE event (flow, http, alert): one line in the file and in the ring.
    pub fn event(&self, rec: &impl Serialize) {
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
    pub fn recent_json(&self, limit: usize) -> String {
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

    fn rec(id: u64) -> FlowRecord {
        FlowRecord::new(
            id,
            "hostA",
            Direction::Outbound,
            "10.0.0.2:40000".parse().unwrap(),
            "10.0.1.2:5432".parse().unwrap(),
            EndpointInfo {
                workload: Some("web".into()),
                app: Some("web".into()),
                zone: Some("dev".into()),
                node: Some("hostA".into()),
                identity: Some("spiffe://corp/wl/web".into()),
                user: None,
                groups: None,
            },
            EndpointInfo {
                workload: None,
                app: None,
                zone: None,
                node: None,
                identity: None,
                user: None,
                groups: None,
            },
            PolicyInfo::denied_because("unknown-source"),
            Utc::now(),
        )
    }

    #[test]
    fn record_is_one_eve_flow_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/flows.json");
        let log = FlowLog::open(Some(&path), 2, Default::default()).unwrap();
        for i in 0..3 {
            let mut r = rec(i);
            let s = Utc::now();
            r.finish(
                s,
                s + chrono::Duration::milliseconds(1500),
                "closed",
                "shutdown",
            );
            log.record(&r);
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3);
        let v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(v["event_type"], "flow");
        assert_eq!(v["proto"], "TCP");
        assert_eq!(v["dest_port"], 5432);
        assert_eq!(v["flow"]["age"], 1);
        assert_eq!(v["eastwall"]["duration_ms"], 1500);
        assert_eq!(v["eastwall"]["policy"]["rule"], "unknown-source");
        assert!(v["timestamp"].as_str().unwrap().ends_with("+0000"));
        // The ring keeps the last two.
        let recent: Vec<serde_json::Value> = serde_json::from_str(&log.recent_json(10)).unwrap();
        assert_eq!(recent.len(), 2);
        assert_eq!(recent[1]["flow_id"], 2);
        let one: Vec<serde_json::Value> = serde_json::from_str(&log.recent_json(1)).unwrap();
        assert_eq!(one[0]["flow_id"], 2);
    }
}
