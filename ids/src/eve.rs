//! Alerts (and anomalies) as Suricata EVE JSON events ([`eastwall_wire::eve::AlertEvent`], the one EVE
//! module of eastwall), with field names as Suricata 7 writes them, plus an `eastwall` object
//! with the proven identities of both ends.

use std::collections::BTreeMap;

use eastwall_wire::eve::{
    AlertEvent, AlertFlow, AnomalyEvent, EveAlert, EveAnomaly, EveDns, EveEnds, EveHttp, EveTls,
    timestamp_unix,
};

use crate::inspect::{Alert, Anomaly, FlowMeta, HttpSummary};
use crate::rule::{Dir, Transport};

/// The EVE `alert` object of `a`, as allowed (see [`EveAlert::blocked`]).
pub fn eve_alert(a: &Alert) -> EveAlert {
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

/// The event for an alert on a flow.
pub fn alert_event(
    alert: &Alert,
    flow: &FlowMeta,
    flow_id: u64,
    ends: Option<EveEnds>,
) -> AlertEvent {
    let (src, dst) = match alert.dir {
        Dir::ToServer => (flow.src, flow.dst),
        Dir::ToClient => (flow.dst, flow.src),
    };
    AlertEvent {
        timestamp: timestamp_unix(alert.timestamp.since_epoch()),
        host: ends.as_ref().map(|e| e.node.clone()),
        flow_id,
        event_type: "alert",
        src_ip: src.ip(),
        src_port: src.port(),
        dest_ip: dst.ip(),
        dest_port: dst.port(),
        proto: alert.transport.as_str(),
        tx_id: alert.tx_id,
        direction: alert.dir.as_str(),
        alert: eve_alert(alert),
        http: alert.http.as_ref().map(http_of),
        tls: alert.tls_sni.as_ref().map(|s| EveTls {
            sni: Some(s.clone()),
            ..EveTls::default()
        }),
        dns: alert.dns_query.as_ref().map(|q| EveDns::query(q.clone())),
        app_proto: alert.app_proto.as_str(),
        flow: AlertFlow {
            src_ip: flow.src.ip(),
            dest_ip: flow.dst.ip(),
            src_port: flow.src.port(),
            dest_port: flow.dst.port(),
        },
        eastwall: ends,
    }
}

/// EVE's `http` object of a transaction.
fn http_of(h: &HttpSummary) -> EveHttp {
    EveHttp {
        hostname: h.hostname.clone(),
        url: h.url.clone(),
        http_user_agent: h.user_agent.clone(),
        http_method: h.method.clone(),
        protocol: h.protocol.clone(),
        status: h.status,
        ..EveHttp::default()
    }
}

/// The EVE `anomaly` record of `anomaly` on `flow`.
pub fn anomaly_event(
    anomaly: &Anomaly,
    flow: &FlowMeta,
    flow_id: u64,
    ends: Option<EveEnds>,
) -> AnomalyEvent {
    let (src, dst) = match anomaly.dir {
        Dir::ToServer => (flow.src, flow.dst),
        Dir::ToClient => (flow.dst, flow.src),
    };
    AnomalyEvent {
        timestamp: timestamp_unix(anomaly.timestamp.since_epoch()),
        host: ends.as_ref().map(|e| e.node.clone()),
        flow_id,
        event_type: "anomaly",
        src_ip: src.ip(),
        src_port: src.port(),
        dest_ip: dst.ip(),
        dest_port: dst.port(),
        proto: Transport::Tcp.as_str(),
        tx_id: anomaly.tx_id,
        http: anomaly.http.as_ref().map(http_of),
        anomaly: EveAnomaly {
            app_proto: "http",
            kind: "applayer",
            event: anomaly.event.name(),
            layer: "proto_parser",
        },
        eastwall: ends,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::{AppProto, HttpSummary, Timestamp};
    use crate::rule::{RuleAction, Transport};
    use eastwall_wire::eve::{Direction, Endpoint};
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
            transport: Transport::Tcp,
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
        let ev = alert_event(
            &alert,
            &flow,
            7,
            Some(EveEnds {
                node: "host-a".into(),
                direction: Direction::Inbound,
                src: Endpoint {
                    identity: Some("spiffe://td/a".into()),
                    ..Endpoint::default()
                },
                dest: Endpoint::default(),
            }),
        );
        let v: serde_json::Value = serde_json::to_value(&ev).unwrap();
        assert_eq!(v["timestamp"], "2024-04-01T12:00:00.123456+0000");
        assert_eq!(v["event_type"], "alert");
        assert_eq!(v["src_ip"], "10.0.0.2");
        assert_eq!(v["src_port"], 80);
        assert_eq!(v["dest_ip"], "10.0.0.1");
        assert_eq!(v["direction"], "to_client");
        assert_eq!(v["proto"], "TCP");
        assert_eq!(v["app_proto"], "http");
        assert_eq!(v["alert"]["action"], "allowed");
        assert_eq!(v["alert"]["signature_id"], 2000001);
        assert_eq!(v["alert"]["category"], "Web Application Attack");
        assert_eq!(v["alert"]["metadata"]["tag"], serde_json::json!(["a", "b"]));
        assert_eq!(v["http"]["status"], 200);
        assert_eq!(v["http"]["hostname"], "example.com");
        assert!(v["http"].get("http_user_agent").is_none());
        assert_eq!(v["flow"]["src_ip"], "10.0.0.1");
        assert_eq!(v["eastwall"]["src"]["identity"], "spiffe://td/a");
        assert_eq!(v["eastwall"]["node"], "host-a");
        assert_eq!(v["host"], "host-a");
        assert!(v.get("tls").is_none());
        assert_eq!(eve_alert(&alert).blocked().action, "blocked");
    }
}
