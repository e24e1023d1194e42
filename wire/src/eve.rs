//! Suricata EVE JSON: the one shape of every event eastwall writes, so a SIEM that reads
//! Suricata reads eastwall unchanged. Three events:
//!
//! - [`FlowEvent`] (`event_type: flow`): one per connection, written when it ends;
//! - [`HttpEvent`] (`event_type: http`): one per HTTP request the node decided;
//! - [`AlertEvent`] (`event_type: alert`): one per IDS alert.
//!
//! Field names are Suricata 7's; what only eastwall knows (identities, users, groups, the
//! deciding rule, the tunnel) is in an `eastwall` object. The vocabulary of flow states and
//! reasons is typed here ([`FlowState`], [`FlowReason`]): their strings exist nowhere else.
//! Timestamps are UTC with microseconds, as Suricata writes them ([`timestamp`]).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use serde::{Serialize, Serializer};

use crate::header::Status;

/// Suricata's timestamp of `t`: `2024-04-01T12:00:00.123456+0000`.
pub fn timestamp(t: SystemTime) -> String {
    timestamp_unix(t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default())
}

/// Suricata's timestamp of the moment `since_epoch` after 1970-01-01 UTC.
pub fn timestamp_unix(since_epoch: Duration) -> String {
    let secs = i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX);
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(dt) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}+0000",
            dt.year(),
            u8::from(dt.month()),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second(),
            since_epoch.subsec_micros()
        ),
        Err(_) => "9999-12-31T23:59:59.999999+0000".to_string(),
    }
}

/// EVE's `proto` of IP protocol `number`, as Suricata writes it (`TCP`, `UDP`, `ICMP`,
/// `IPv6-ICMP`, `SCTP`, else the number).
pub fn proto_name(number: u8) -> Cow<'static, str> {
    match number {
        6 => "TCP".into(),
        17 => "UDP".into(),
        1 => "ICMP".into(),
        58 => "IPv6-ICMP".into(),
        132 => "SCTP".into(),
        n => n.to_string().into(),
    }
}

/// Which side of the node a connection was captured on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Opened by a workload (or process) on this host.
    Outbound,
    /// Arriving for a workload on this host (plaintext capture, or the tunnel).
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

/// What a decision did (or a monitor rule would have done).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Let through.
    Allow,
    /// Refused.
    Deny,
}

impl Action {
    /// `allow` or `deny`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        }
    }
}

/// How a flow ended, EVE's `flow.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowState {
    /// Allowed, carried, and ended (normally or not: see the reason).
    Closed,
    /// Refused by a decision (this node's, or the destination node's).
    Rejected,
    /// Allowed, but it could not be carried (server or tunnel unreachable).
    Failed,
    /// Dropped: by capture before any listener saw it (spoofed source), or by the node's
    /// decision on a protocol it does not proxy.
    Dropped,
    /// Allowed, and carried by the kernel, not by the node (protocols other than TCP and
    /// UDP): the record is written when the node decides.
    Bypassed,
}

/// Why a flow ended, EVE's `flow.reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlowReason {
    /// Both sides closed.
    Shutdown,
    /// Denied by this node.
    Denied,
    /// The destination node denied it.
    DeniedByDestination,
    /// The server could not be reached.
    UpstreamError,
    /// The tunnel could not be opened, or failed before the destination answered.
    TunnelError,
    /// A side failed while the flow was carried.
    Error,
    /// A newer policy denies it (hot reload).
    Revoked,
    /// The IPS stopped it.
    IdsBlocked,
    /// A tunnel stream whose header could not be read.
    BadTunnelHeader,
    /// A tunnel peer whose handshake was refused.
    TunnelHandshakeRefused,
    /// A packet whose source address does not belong behind its interface.
    SpoofedSource,
    /// Allowed and passed to the kernel to forward.
    Forwarded,
    /// Allowed, but refused for lack of resources (the workload's connection budget, the
    /// node's descriptors).
    ResourceLimit,
}

impl FlowReason {
    /// The kebab-case name, as written in records.
    pub fn as_str(self) -> &'static str {
        match self {
            FlowReason::Shutdown => "shutdown",
            FlowReason::Denied => "denied",
            FlowReason::DeniedByDestination => "denied-by-destination",
            FlowReason::UpstreamError => "upstream-error",
            FlowReason::TunnelError => "tunnel-error",
            FlowReason::Error => "error",
            FlowReason::Revoked => "revoked",
            FlowReason::IdsBlocked => "ids-blocked",
            FlowReason::BadTunnelHeader => "bad-tunnel-header",
            FlowReason::TunnelHandshakeRefused => "tunnel-handshake-refused",
            FlowReason::SpoofedSource => "spoofed-source",
            FlowReason::Forwarded => "forwarded",
            FlowReason::ResourceLimit => "resource-limit",
        }
    }
}

impl fmt::Display for FlowReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One end of a flow as eastwall knows it.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Endpoint {
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

/// What became of a tunnel stream: the destination's answer, or why there was none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelStatus {
    /// The destination node answered (`connected`, `denied`, `identity-mismatch`, ...).
    Answered(Status),
    /// No tunnel connection: the handshake failed (refused certificate, node unreachable).
    HandshakeFailed,
    /// The connection was up but the stream failed before an answer.
    StreamFailed,
}

impl TunnelStatus {
    /// The name written in records.
    pub fn as_str(self) -> &'static str {
        match self {
            TunnelStatus::Answered(s) => s.as_str(),
            TunnelStatus::HandshakeFailed => "handshake-failed",
            TunnelStatus::StreamFailed => "stream-failed",
        }
    }
}

impl Serialize for TunnelStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// How a connection crossed between nodes.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TunnelInfo {
    /// `quic` or `h2` (or the configured mode when none could be opened).
    pub transport: &'static str,
    /// The other node's tunnel address.
    pub peer: String,
    /// The other end's proven identity (the source's at the destination; the destination's
    /// at the source).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_identity: Option<String>,
    /// The destination's answer, or why there was none.
    pub status: TunnelStatus,
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
    pub would: Action,
}

/// The decision part of a record.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PolicyInfo {
    /// Allowed or denied.
    pub verdict: Action,
    /// Deciding rule id, or `default-deny`, or why the node refused before policy was
    /// consulted (`unknown-source`, `identity-mismatch`, ...).
    pub rule: String,
    /// Section of the deciding rule.
    pub section: Option<String>,
    /// Mode of the deciding rule: always `enforce` (monitor rules never decide).
    pub mode: &'static str,
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

/// EVE's `flow` object of a flow event.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FlowCounters {
    /// Datagrams from client to server (UDP; absent for TCP, whose packets a proxy does
    /// not see).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pkts_toserver: Option<u64>,
    /// Datagrams from server to client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pkts_toclient: Option<u64>,
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
    /// How it ended.
    pub state: FlowState,
    /// Why.
    pub reason: FlowReason,
    /// Whether the IDS raised alerts on the flow.
    pub alerted: bool,
}

/// How many requests (HTTP requests, DNS queries) a flow carried and how many the node
/// denied.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct RequestCounts {
    /// Requests decided.
    pub requests: u64,
    /// Requests denied (HTTP: answered by the node with 403, or 400 for a malformed target;
    /// DNS: answered with REFUSED).
    pub denied: u64,
}

/// What the IDS did on one connection.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct IdsInfo {
    /// The profile that inspected it.
    pub profile: String,
    /// `detect` or `prevent`.
    pub mode: &'static str,
    /// Alerts raised.
    pub alerts: u64,
    /// The signature that stopped the connection, in prevent mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked_by: Option<u32>,
}

impl IdsInfo {
    /// Adds `other` (another inspection of the same connection: another profile, another
    /// HTTP/2 stream).
    pub fn merge(&mut self, other: IdsInfo) {
        self.alerts += other.alerts;
        self.blocked_by = self.blocked_by.or(other.blocked_by);
    }
}

/// eastwall's part of a flow event.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FlowDecision {
    /// The node that wrote the record.
    pub node: String,
    /// Which side of the node saw the connection.
    pub direction: Direction,
    /// The source.
    pub src: Endpoint,
    /// The destination.
    pub dest: Endpoint,
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
    /// The normalized path the policy decided the last HTTP request on (the `http` object
    /// has the request as sent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub normalized_path: Option<String>,
    /// HTTP requests decided on this connection, and how many were denied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_requests: Option<RequestCounts>,
    /// DNS queries decided one by one on this session (each has its own `dns` event).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_queries: Option<RequestCounts>,
    /// What the IDS did on this connection (its alerts are `alert` events of the same flow).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ids: Option<IdsInfo>,
    /// This record stands for many flows of one kind (a flood of denials): how many, and
    /// when; the rest of the record is the last of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<Aggregate>,
}

/// Flows folded into one record.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Aggregate {
    /// Flows this record stands for (none of them has a record of its own).
    pub flows: u64,
    /// When the first of them ended.
    pub first: String,
    /// When the last of them ended.
    pub last: String,
    /// Whether they are of several kinds (the node's table of kinds was full): then only
    /// the last flow's addresses, rule and outcome are given.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub mixed: bool,
}

/// EVE's `http` object: one request.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct EveHttp {
    /// Host the request named (authority or `Host`), without port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The request target as sent.
    pub url: String,
    /// Method.
    pub http_method: String,
    /// `HTTP/1.1`, `HTTP/2`.
    pub protocol: String,
    /// User agent, if sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_user_agent: Option<String>,
    /// Response status (the node's own 403/400/502, or the server's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Response body length, when known from `content-length`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
}

/// EVE's `tls` object: what the ClientHello said.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct EveTls {
    /// Server name (SNI), if sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// Highest version offered (`TLS 1.3`, `TLS 1.2`, ..., `UNDETERMINED`), when read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// ALPN protocols offered.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub client_alpns: Vec<String>,
}

/// EVE's `dns` object of an alert: the query, in Suricata's version 3 shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EveDns {
    /// Always 3.
    pub version: u8,
    /// The question (its name: the IDS does not keep the type).
    pub queries: [EveDnsName; 1],
}

impl EveDns {
    /// The `dns` object of an alert on a query for `rrname`.
    pub fn query(rrname: String) -> EveDns {
        EveDns {
            version: 3,
            queries: [EveDnsName { rrname }],
        }
    }
}

/// A query of an alert's [`EveDns`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EveDnsName {
    /// The name asked.
    pub rrname: String,
}

/// EVE's `dns` object of a `dns` event, in Suricata's version 3 shape: one request or
/// response, with its `queries` and `answers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EveDnsMessage {
    /// Always 3.
    pub version: u8,
    /// `request` or `response`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The transaction's number on the flow (requests counted from 0; a response has its
    /// request's).
    pub tx_id: u64,
    /// The message id.
    pub id: u16,
    /// The header's flags, in hex (`100`, `8180`).
    pub flags: String,
    /// A response.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub qr: bool,
    /// Authoritative answer.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub aa: bool,
    /// Truncated.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tc: bool,
    /// Recursion desired.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub rd: bool,
    /// Recursion available.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ra: bool,
    /// Opcode (0: a standard query).
    pub opcode: u8,
    /// Response code (`NOERROR`, `NXDOMAIN`, `REFUSED`, ...).
    pub rcode: &'static str,
    /// The question.
    pub queries: Vec<EveDnsQuery>,
    /// The answer records (responses).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<EveDnsAnswer>,
}

/// One question of an [`EveDnsMessage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EveDnsQuery {
    /// The name asked.
    pub rrname: String,
    /// The type asked (`A`, `AAAA`, `TXT`, ..., `TYPE65280`).
    pub rrtype: String,
}

/// One answer record of an [`EveDnsMessage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EveDnsAnswer {
    /// Owner name.
    pub rrname: String,
    /// Record type.
    pub rrtype: String,
    /// Time to live, seconds.
    pub ttl: u32,
    /// The data as text (address or name), when eastwall reads that type.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub rdata: String,
}

/// One DNS message on a flow the node decides query by query (`event_type: dns`): a
/// request with its decision, or the server's response to an allowed one.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DnsEvent {
    /// When the request was decided or the response relayed.
    pub timestamp: String,
    /// The node that wrote the event (its `nodeName`).
    pub host: String,
    /// The session's flow id.
    pub flow_id: u64,
    /// Always `dns`.
    pub event_type: &'static str,
    /// Client address.
    pub src_ip: IpAddr,
    /// Client port.
    pub src_port: u16,
    /// Server address.
    pub dest_ip: IpAddr,
    /// Server port.
    pub dest_port: u16,
    /// `UDP` or `TCP`.
    pub proto: &'static str,
    /// The request or response.
    pub dns: EveDnsMessage,
    /// The decision on a request (absent on responses: their request's event has it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eastwall: Option<L7Decision>,
}

/// A flow event (`event_type: flow`), one per connection.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FlowEvent {
    /// When the record was written (the flow's end).
    pub timestamp: String,
    /// The node that wrote the event (its `nodeName`).
    pub host: String,
    /// The flow's id: 51 bits (exact in JavaScript), unique across the fleet (its `http`,
    /// `dns` and `alert` events carry the same).
    pub flow_id: u64,
    /// Always `flow`.
    pub event_type: &'static str,
    /// Source address.
    pub src_ip: IpAddr,
    /// Source port.
    pub src_port: u16,
    /// Destination address.
    pub dest_ip: IpAddr,
    /// Destination port.
    pub dest_port: u16,
    /// `TCP`, `UDP`, ... ([`proto_name`]).
    pub proto: Cow<'static, str>,
    /// ICMP (or ICMPv6) type of the flow's first message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    /// Its ICMP code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
    /// The application protocol the node detected (`http`, `http2`, `tls`, `failed` for
    /// opaque TCP it inspected), absent when it did not look (L4 decisions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_proto: Option<&'static str>,
    /// Byte counts and timing.
    pub flow: FlowCounters,
    /// The last HTTP request on the connection (each has its own `http` event too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<EveHttp>,
    /// The TLS handshake the node read (without decrypting).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<EveTls>,
    /// Identities and decision.
    pub eastwall: FlowDecision,
}

/// eastwall's part of an [`HttpEvent`] or a [`DnsEvent`] query.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct L7Decision {
    /// The node that decided.
    pub node: String,
    /// Which side of the node saw the connection.
    pub direction: Direction,
    /// The source's identity, user and groups.
    pub src: Endpoint,
    /// The destination.
    pub dest: Endpoint,
    /// The decision for this request.
    pub policy: PolicyInfo,
    /// The normalized path the policy decided on (HTTP; the `http` object has the request
    /// as sent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub normalized_path: Option<String>,
}

/// One HTTP request's decision (`event_type: http`), written as it completes.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HttpEvent {
    /// When the response (or the node's refusal) was sent.
    pub timestamp: String,
    /// The node that wrote the event (its `nodeName`).
    pub host: String,
    /// The connection's flow id.
    pub flow_id: u64,
    /// Always `http`.
    pub event_type: &'static str,
    /// Client address.
    pub src_ip: IpAddr,
    /// Client port.
    pub src_port: u16,
    /// Server address.
    pub dest_ip: IpAddr,
    /// Server port.
    pub dest_port: u16,
    /// Always `TCP`.
    pub proto: &'static str,
    /// `http` or `http2`.
    pub app_proto: &'static str,
    /// The request.
    pub http: EveHttp,
    /// The decision and who was on each end.
    pub eastwall: L7Decision,
}

/// EVE's `alert` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EveAlert {
    /// `allowed`, or `blocked` when the node blocked the traffic.
    pub action: &'static str,
    /// Generator id.
    pub gid: u32,
    /// Signature id.
    pub signature_id: u32,
    /// Revision.
    pub rev: u32,
    /// The rule's `msg`.
    pub signature: String,
    /// The classtype's description.
    pub category: String,
    /// Priority.
    pub severity: u8,
    /// The rule's metadata, each key with its values in rule order.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, Vec<String>>,
}

impl EveAlert {
    /// The same alert, marked as blocked by the node.
    pub fn blocked(mut self) -> Self {
        self.action = "blocked";
        self
    }
}

/// EVE's `flow` object of an alert: the flow as its client opened it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlertFlow {
    /// Client address.
    pub src_ip: IpAddr,
    /// Server address.
    pub dest_ip: IpAddr,
    /// Client port.
    pub src_port: u16,
    /// Server port.
    pub dest_port: u16,
}

/// eastwall's part of an alert or anomaly: the node and who is on each end of the flow, as
/// in the flow's own event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EveEnds {
    /// The node that inspected the flow.
    pub node: String,
    /// Which side of the node saw the connection.
    pub direction: Direction,
    /// The client.
    pub src: Endpoint,
    /// The server.
    pub dest: Endpoint,
}

/// An IDS alert (`event_type: alert`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertEvent {
    /// When the matching data was seen.
    pub timestamp: String,
    /// The node that inspected the flow (absent from `eastwall ids` on a capture file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The node's id of the flow.
    pub flow_id: u64,
    /// Always `alert`.
    pub event_type: &'static str,
    /// Sender of the data that matched.
    pub src_ip: IpAddr,
    /// Its port.
    pub src_port: u16,
    /// Receiver of the data that matched.
    pub dest_ip: IpAddr,
    /// Its port.
    pub dest_port: u16,
    /// `TCP` or `UDP`.
    pub proto: &'static str,
    /// The transaction, for HTTP and DNS alerts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx_id: Option<u64>,
    /// `to_server` or `to_client`.
    pub direction: &'static str,
    /// The alert.
    pub alert: EveAlert,
    /// HTTP transaction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<EveHttp>,
    /// TLS handshake.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<EveTls>,
    /// DNS query.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<EveDns>,
    /// Application protocol.
    pub app_proto: &'static str,
    /// The flow.
    pub flow: AlertFlow,
    /// The node and both ends (absent when no node inspected it: `eastwall ids` on a
    /// capture file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eastwall: Option<EveEnds>,
}

/// An EVE `anomaly` record of the IDS (Suricata's shape: an application-layer event of a
/// flow, such as a decompression bomb).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnomalyEvent {
    /// When.
    pub timestamp: String,
    /// The node that inspected the flow (absent from `eastwall ids` on a capture file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The node's id of the flow.
    pub flow_id: u64,
    /// Always `anomaly`.
    pub event_type: &'static str,
    /// Sender of the data.
    pub src_ip: IpAddr,
    /// Its port.
    pub src_port: u16,
    /// Receiver of the data.
    pub dest_ip: IpAddr,
    /// Its port.
    pub dest_port: u16,
    /// `TCP` or `UDP`.
    pub proto: &'static str,
    /// The transaction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx_id: Option<u64>,
    /// The HTTP transaction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<EveHttp>,
    /// What was noticed.
    pub anomaly: EveAnomaly,
    /// The node and both ends (absent when no node inspected it: `eastwall ids` on a
    /// capture file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eastwall: Option<EveEnds>,
}

/// The `anomaly` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EveAnomaly {
    /// Application protocol (`http`).
    pub app_proto: &'static str,
    /// Always `applayer`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The event (`COMPRESSION_BOMB`, ...).
    pub event: &'static str,
    /// Always `proto_parser`.
    pub layer: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_with_microseconds() {
        assert_eq!(
            timestamp_unix(Duration::from_micros(1_711_972_800_123_456)),
            "2024-04-01T12:00:00.123456+0000"
        );
        assert_eq!(
            timestamp(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00.000000+0000"
        );
        assert_eq!(
            timestamp_unix(Duration::from_secs(u64::MAX)),
            "9999-12-31T23:59:59.999999+0000"
        );
    }

    #[test]
    fn vocabulary_is_written_as_eve_expects() {
        fn j<T: Serialize>(v: &T) -> String {
            serde_json::to_string(v).unwrap()
        }
        assert_eq!(j(&FlowState::Rejected), "\"rejected\"");
        assert_eq!(
            j(&FlowReason::DeniedByDestination),
            "\"denied-by-destination\""
        );
        assert_eq!(j(&FlowReason::IdsBlocked), "\"ids-blocked\"");
        assert_eq!(j(&Action::Allow), "\"allow\"");
        assert_eq!(j(&Direction::Inbound), "\"inbound\"");
        assert_eq!(
            j(&TunnelStatus::Answered(Status::IdentityMismatch)),
            "\"identity-mismatch\""
        );
        assert_eq!(j(&TunnelStatus::HandshakeFailed), "\"handshake-failed\"");
        // Display and serde agree for every reason.
        for r in [
            FlowReason::Shutdown,
            FlowReason::Denied,
            FlowReason::DeniedByDestination,
            FlowReason::UpstreamError,
            FlowReason::TunnelError,
            FlowReason::Error,
            FlowReason::Revoked,
            FlowReason::IdsBlocked,
            FlowReason::BadTunnelHeader,
            FlowReason::TunnelHandshakeRefused,
            FlowReason::SpoofedSource,
            FlowReason::Forwarded,
            FlowReason::ResourceLimit,
        ] {
            assert_eq!(j(&r), format!("\"{r}\""));
        }
    }

    #[test]
    fn a_flow_event_is_one_eve_line() {
        let ev = FlowEvent {
            timestamp: timestamp_unix(Duration::from_millis(1_500)),
            host: "hostA".into(),
            flow_id: 7,
            event_type: "flow",
            src_ip: "10.0.0.2".parse().unwrap(),
            src_port: 40000,
            dest_ip: "10.0.1.2".parse().unwrap(),
            dest_port: 5432,
            proto: proto_name(6),
            icmp_type: None,
            icmp_code: None,
            app_proto: None,
            flow: FlowCounters {
                pkts_toserver: None,
                pkts_toclient: None,
                bytes_toserver: 3,
                bytes_toclient: 4,
                start: timestamp_unix(Duration::ZERO),
                end: timestamp_unix(Duration::from_millis(1_500)),
                age: 1,
                state: FlowState::Closed,
                reason: FlowReason::Shutdown,
                alerted: false,
            },
            http: None,
            tls: None,
            eastwall: FlowDecision {
                node: "hostA".into(),
                direction: Direction::Outbound,
                src: Endpoint {
                    workload: Some("web".into()),
                    identity: Some("spiffe://corp/wl/web".into()),
                    ..Endpoint::default()
                },
                dest: Endpoint::default(),
                policy: PolicyInfo {
                    verdict: Action::Allow,
                    rule: "web-to-db".into(),
                    section: Some("apps".into()),
                    mode: "enforce",
                    monitor: vec![MonitorInfo {
                        rule: "audit".into(),
                        section: "audit".into(),
                        would: Action::Deny,
                    }],
                    l7_pending: false,
                    ids: None,
                },
                duration_ms: 1500,
                error: None,
                tunnel: None,
                revoked_by: None,
                normalized_path: None,
                http_requests: None,
                dns_queries: None,
                ids: None,
                aggregate: None,
            },
        };
        let v: serde_json::Value = serde_json::to_value(&ev).unwrap();
        assert!(v["eastwall"].get("aggregate").is_none());
        assert_eq!(v["event_type"], "flow");
        assert_eq!(v["src_ip"], "10.0.0.2");
        assert_eq!(v["dest_port"], 5432);
        assert_eq!(v["flow"]["state"], "closed");
        assert_eq!(v["flow"]["reason"], "shutdown");
        assert_eq!(v["flow"]["age"], 1);
        assert_eq!(v["proto"], "TCP");
        assert!(v["flow"].get("pkts_toserver").is_none());
        assert_eq!(v["eastwall"]["policy"]["verdict"], "allow");
        assert_eq!(v["eastwall"]["policy"]["mode"], "enforce");
        assert_eq!(v["eastwall"]["policy"]["monitor"][0]["would"], "deny");
        assert_eq!(v["eastwall"]["src"]["workload"], "web");
        assert!(v["eastwall"]["src"].get("user").is_none());
        assert!(v.get("app_proto").is_none());
        assert!(v["eastwall"].get("tunnel").is_none());
        assert!(v["timestamp"].as_str().unwrap().ends_with("+0000"));
    }
}
