//! Alerts as Suricata EVE JSON (`event_type: alert`), with field names as Suricata 7 writes
//! them, plus an `eastwall` object with the proven identities of both ends.

use crate::inspect::{Alert, FlowMeta, Timestamp};
use crate::rule::Dir;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The EVE `alert` object.
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

impl From<&Alert> for EveAlert {
    fn from(a: &Alert) -> Self {
        let mut metadata: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in &a.metadata {
            metadata.entry(k.clone()).or_default().push(v.clone());
        }
        EveAlert {
            action: "allowed",
            gid: a.gid,
            signature_id: a.sid,
            rev: a.rev,
            signature: a.msg.clone(),
            category: a.category.clone(),
            severity: a.severity,
            metadata,
        }
    }
}

/// The EVE `http` object of an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EveHttp {
    /// Host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Request target.
    pub url: String,
    /// `User-Agent`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_user_agent: Option<String>,
    /// Method.
    pub http_method: String,
    /// Version.
    pub protocol: String,
    /// Response status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

/// The EVE `tls` object of an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EveTls {
    /// Server name.
    pub sni: String,
}

/// The EVE `dns` object of an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EveDns {
    /// Query name.
    pub rrname: String,
}

/// The EVE `flow` object of an alert: the flow as its client opened it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EveFlow {
    /// Client address.
    pub src_ip: IpAddr,
    /// Server address.
    pub dest_ip: IpAddr,
    /// Client port.
    pub src_port: u16,
    /// Server port.
    pub dest_port: u16,
}

/// eastwall's identities of the two ends (SPIFFE IDs proven by the tunnel, when known).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EveIdentities {
    /// The client's identity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_identity: Option<String>,
    /// The server's identity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dest_identity: Option<String>,
}

/// A whole EVE alert event, one JSON line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EveEvent {
    /// `2024-04-01T12:00:00.123456+0000`.
    pub timestamp: String,
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
    /// Always `TCP`.
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
    pub flow: EveFlow,
    /// Identities of both ends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eastwall: Option<EveIdentities>,
}

/// Suricata's timestamp format, in UTC.
pub fn eve_timestamp(t: Timestamp) -> String {
    let d = t.since_epoch();
    let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(dt) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}+0000",
            dt.year(),
            u8::from(dt.month()),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second(),
            d.subsec_micros()
        ),
        Err(_) => "9999-12-31T23:59:59.999999+0000".to_string(),
    }
}

impl EveEvent {
    /// The event for an alert on a flow.
    pub fn new(
        alert: &Alert,
        flow: &FlowMeta,
        flow_id: u64,
        identities: Option<EveIdentities>,
    ) -> Self {
        let (src, dst) = match alert.dir {
            Dir::ToServer => (flow.src, flow.dst),
            Dir::ToClient => (flow.dst, flow.src),
        };
        EveEvent {
            timestamp: eve_timestamp(alert.timestamp),
            flow_id,
            event_type: "alert",
            src_ip: src.ip(),
            src_port: src.port(),
            dest_ip: dst.ip(),
            dest_port: dst.port(),
            proto: "TCP",
            tx_id: alert.tx_id,
            direction: alert.dir.as_str(),
            alert: EveAlert::from(alert),
            http: alert.http.as_ref().map(|h| EveHttp {
                hostname: h.hostname.clone(),
                url: h.url.clone(),
                http_user_agent: h.user_agent.clone(),
                http_method: h.method.clone(),
                protocol: h.protocol.clone(),
                status: h.status,
            }),
            tls: alert.tls_sni.as_ref().map(|s| EveTls { sni: s.clone() }),
            dns: alert
                .dns_query
                .as_ref()
                .map(|q| EveDns { rrname: q.clone() }),
            app_proto: alert.app_proto.as_str(),
            flow: EveFlow {
                src_ip: flow.src.ip(),
                dest_ip: flow.dst.ip(),
                src_port: flow.src.port(),
                dest_port: flow.dst.port(),
            },
            eastwall: identities,
        }
    }

    /// One JSON line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::{AppProto, HttpSummary};
    use crate::rule::RuleAction;
    use std::time::Duration;

    #[test]
    fn event_json() {
        let alert = Alert {
            action: RuleAction::Drop,
            gid: 1,
            sid: 2000001,
            rev: 3,
            msg: "ET TEST".into(),
            classtype: Some("web-application-attack".into()),
            category: "Web Application Attack".into(),
            severity: 1,
            metadata: vec![
                ("tag".into(), "a".into()),
                ("tag".into(), "b".into()),
                ("created_at".into(), "2020_01_01".into()),
            ],
            dir: Dir::ToClient,
            tx_id: Some(0),
            app_proto: AppProto::Http1,
            timestamp: Timestamp::from_unix(Duration::from_micros(1_711_972_800_123_456)),
            http: Some(HttpSummary {
                hostname: Some("example.com".into()),
                url: "/x".into(),
                user_agent: None,
                method: "GET".into(),
                protocol: "HTTP/1.1".into(),
                status: Some(200),
            }),
            tls_sni: None,
            dns_query: None,
        };
        let flow = FlowMeta {
            src: "10.0.0.1:40000".parse().unwrap(),
            dst: "10.0.0.2:80".parse().unwrap(),
        };
        let ev = EveEvent::new(
            &alert,
            &flow,
            7,
            Some(EveIdentities {
                src_identity: Some("spiffe://td/a".into()),
                dest_identity: None,
            }),
        );
        let v: serde_json::Value = serde_json::from_str(&ev.to_json()).unwrap();
        assert_eq!(v["timestamp"], "2024-04-01T12:00:00.123456+0000");
        assert_eq!(v["event_type"], "alert");
        assert_eq!(v["src_ip"], "10.0.0.2");
        assert_eq!(v["src_port"], 80);
        assert_eq!(v["dest_ip"], "10.0.0.1");
        assert_eq!(v["direction"], "to_client");
        assert_eq!(v["app_proto"], "http");
        assert_eq!(v["alert"]["action"], "allowed");
        assert_eq!(v["alert"]["signature_id"], 2000001);
        assert_eq!(v["alert"]["category"], "Web Application Attack");
        assert_eq!(v["alert"]["metadata"]["tag"], serde_json::json!(["a", "b"]));
        assert_eq!(v["http"]["status"], 200);
        assert_eq!(v["http"]["hostname"], "example.com");
        assert!(v["http"].get("http_user_agent").is_none());
        assert_eq!(v["flow"]["src_ip"], "10.0.0.1");
        assert_eq!(v["eastwall"]["src_identity"], "spiffe://td/a");
        assert!(v.get("tls").is_none());
        assert_eq!(EveAlert::from(&alert).blocked().action, "blocked");
    }
}
