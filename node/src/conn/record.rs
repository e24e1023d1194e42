//! Recording a connection: a [`FlowGuard`] is made when the connection is planned, collects
//! what happens to it (bytes, tunnel, L7 and IDS facts), and when it is dropped writes the
//! EVE `flow` event and the metrics, exactly once: also when the task carrying the connection
//! panics or is cancelled (then the flow ends in an error saying so).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use eastwall_policy::{Protocol, Workload};
use eastwall_wire::eve::{
    self, Action, Direction, EveEnds, EveHttp, EveTls, FlowCounters, FlowDecision, FlowEvent,
    IdsInfo, MonitorInfo, PolicyInfo, RequestCounts, TunnelInfo,
};

use super::{DenyReason, End, Ending, Ends, Outcome, Plan, Verdict};
use crate::rules::Rules;
use crate::telemetry::Telemetry;
use crate::telemetry::metrics::{BytesLabels, ClosedLabels, DirLabels, RuleLabels};

/// One HTTP request as recorded: as sent, and the normalized path the policy decided on
/// (`None`: a target that could not be normalized).
#[derive(Debug, Clone)]
pub(crate) struct HttpRecord {
    pub(crate) http: EveHttp,
    pub(crate) normalized_path: Option<String>,
    /// When the request's head was read.
    pub(crate) started: std::time::Instant,
}

/// The record of one connection, written when the guard is dropped.
pub(crate) struct FlowGuard {
    telemetry: Arc<Telemetry>,
    start: SystemTime,
    /// The flow's id (its `http` and `alert` events carry it too).
    pub(crate) flow_id: u64,
    node: String,
    direction: Direction,
    proto: Protocol,
    src: SocketAddr,
    dst: SocketAddr,
    /// The source as recorded.
    pub(crate) src_info: eve::Endpoint,
    /// The destination as recorded.
    pub(crate) dst_info: eve::Endpoint,
    /// The decision as recorded (L7 may decide again: TLS, opaque).
    pub(crate) policy: PolicyInfo,
    /// The application protocol the node detected.
    pub(crate) app_proto: Option<&'static str>,
    /// The last HTTP request. (This and the other L7 and IDS parts are boxed: a guard lives
    /// as long as its connection, and most connections have none of them.)
    pub(crate) http: Option<Box<HttpRecord>>,
    /// The ClientHello read.
    pub(crate) tls: Option<Box<EveTls>>,
    /// The tunnel, when the connection crossed it.
    pub(crate) tunnel: Option<TunnelInfo>,
    /// What the IDS did.
    pub(crate) ids: Option<Box<IdsInfo>>,
    /// HTTP requests decided, and how many were denied.
    pub(crate) http_requests: Option<RequestCounts>,
    /// DNS queries decided one by one (sessions the node decides per query).
    pub(crate) dns_queries: Option<RequestCounts>,
    /// Bytes to the server.
    pub(crate) bytes_toserver: u64,
    /// Bytes to the client.
    pub(crate) bytes_toclient: u64,
    /// Datagrams to the server and to the client (UDP sessions).
    pub(crate) datagrams: Option<(u64, u64)>,
    /// An error met on the way (the outcome's own error takes precedence).
    pub(crate) error: Option<String>,
    outcome: Option<Outcome>,
    /// Whether the record may be folded into an aggregate when its kind floods (denials
    /// always may).
    foldable: bool,
}

impl FlowGuard {
    /// The record of the connection between `ends`, planned as `plan`.
    pub(crate) fn new(
        telemetry: &Arc<Telemetry>,
        node: &str,
        rules: &Rules,
        ends: &Ends,
        plan: &Plan,
    ) -> FlowGuard {
        let reg = &rules.registry;
        let src_wl = reg.workload_by_addr(ends.src.addr.ip());
        let dst_wl = reg.workload_by_addr(ends.dst.addr.ip());
        let mut g = FlowGuard::at(
            telemetry,
            node,
            ends.direction(),
            (ends.src.addr, endpoint(src_wl, &ends.src)),
            (ends.dst.addr, endpoint(dst_wl, &ends.dst)),
            policy_info(plan),
        );
        g.proto = ends.proto;
        g
    }

    /// The record of a connection known only by its addresses and endpoints (refused before
    /// its ends could be identified).
    pub(crate) fn at(
        telemetry: &Arc<Telemetry>,
        node: &str,
        direction: Direction,
        (src, src_info): (SocketAddr, eve::Endpoint),
        (dst, dst_info): (SocketAddr, eve::Endpoint),
        policy: PolicyInfo,
    ) -> FlowGuard {
        FlowGuard {
            telemetry: telemetry.clone(),
            start: SystemTime::now(),
            flow_id: telemetry.flows.next_id(),
            node: node.to_owned(),
            direction,
            proto: Protocol::Tcp,
            src,
            dst,
            src_info,
            dst_info,
            policy,
            app_proto: None,
            http: None,
            tls: None,
            tunnel: None,
            ids: None,
            http_requests: None,
            dns_queries: None,
            bytes_toserver: 0,
            bytes_toclient: 0,
            datagrams: None,
            error: None,
            outcome: None,
            foldable: false,
        }
    }

    /// This record, for a connection accepted at `t` (before it was identified and planned).
    pub(crate) fn since(mut self, t: SystemTime) -> FlowGuard {
        self.start = t;
        self
    }

    /// Records a new decision on the whole connection (L7: TLS handshake, opaque stream).
    pub(crate) fn decided(&mut self, plan: &Plan) {
        self.policy = policy_info(plan);
    }

    /// Adds what an IDS inspection found.
    pub(crate) fn add_ids(&mut self, info: Option<IdsInfo>) {
        match (&mut self.ids, info) {
            (Some(acc), Some(i)) => acc.merge(i),
            (acc @ None, Some(i)) => *acc = Some(Box::new(i)),
            (_, None) => {}
        }
    }

    /// The node and both ends, for IDS alerts and anomalies.
    pub(crate) fn ends(&self) -> EveEnds {
        EveEnds {
            node: self.node.clone(),
            direction: self.direction,
            src: self.src_info.clone(),
            dest: self.dst_info.clone(),
        }
    }

    /// Lets the record be folded into an aggregate when its kind floods, whatever the
    /// outcome (flows of protocols the kernel carries: a ping flood).
    pub(crate) fn foldable(&mut self) {
        self.foldable = true;
    }

    /// Ends the connection's life with `outcome`; the record is written now.
    pub(crate) fn finish(mut self, outcome: Outcome) {
        self.outcome = Some(outcome);
    }

    fn write(&mut self) {
        let outcome = self.outcome.take().unwrap_or_else(|| {
            Outcome::Ended(Ending::Failed(
                "the connection's task ended before the connection did".to_owned(),
            ))
        });
        let end = SystemTime::now();
        let (state, reason) = outcome.eve();
        let icmp = match self.proto {
            Protocol::Icmp { kind, code } | Protocol::Icmpv6 { kind, code } => Some((kind, code)),
            _ => None,
        };
        let lived = end.duration_since(self.start).unwrap_or_default();
        let ms = lived.as_millis() as u64;
        let mut error = outcome.error().or_else(|| self.error.take());
        let mut revoked_by = None;
        if let Outcome::Ended(Ending::Revoked(rule)) = &outcome {
            revoked_by = Some(rule.clone());
            error = None;
        }
        let alerted = self.ids.as_ref().is_some_and(|i| i.alerts > 0);
        let m = &self.telemetry.metrics;
        let dir = self.direction.as_str();
        let verdict = self.policy.verdict.as_str();
        if outcome.refused_here() {
            m.denied_all.inc();
        }
        // A spoofed packet never opened a connection; everything else that was opened closes.
        if !matches!(outcome, Outcome::Dropped(DenyReason::SpoofedSource)) {
            m.connection_seconds
                .get_or_create(&DirLabels { direction: dir })
                .observe(lived.as_secs_f64());
            m.closed
                .get_or_create(&ClosedLabels {
                    direction: dir,
                    verdict: if outcome.refused_here() {
                        "deny"
                    } else {
                        "allow"
                    },
                })
                .inc();
        }
        m.decisions
            .get_or_create(&RuleLabels {
                direction: dir,
                rule: self.policy.rule.clone(),
                mode: "enforce",
                action: verdict,
            })
            .inc();
        for (flow, n) in [
            ("toserver", self.bytes_toserver),
            ("toclient", self.bytes_toclient),
        ] {
            if n > 0 {
                m.bytes
                    .get_or_create(&BytesLabels {
                        direction: dir,
                        flow,
                    })
                    .inc_by(n);
            }
        }
        let (http, normalized_path) = match self.http.take() {
            Some(r) => (Some(r.http), r.normalized_path),
            None => (None, None),
        };
        let event = FlowEvent {
            timestamp: eve::timestamp(end),
            host: self.node.clone(),
            flow_id: self.flow_id,
            event_type: "flow",
            src_ip: self.src.ip(),
            src_port: self.src.port(),
            dest_ip: self.dst.ip(),
            dest_port: self.dst.port(),
            proto: eve::proto_name(self.proto.number()),
            icmp_type: icmp.map(|i| i.0),
            icmp_code: icmp.map(|i| i.1),
            app_proto: self.app_proto,
            flow: FlowCounters {
                pkts_toserver: self.datagrams.map(|d| d.0),
                pkts_toclient: self.datagrams.map(|d| d.1),
                bytes_toserver: self.bytes_toserver,
                bytes_toclient: self.bytes_toclient,
                start: eve::timestamp(self.start),
                end: eve::timestamp(end),
                age: ms / 1000,
                state,
                reason,
                alerted,
            },
            http,
            tls: self.tls.take().map(|t| *t),
            eastwall: FlowDecision {
                node: std::mem::take(&mut self.node),
                direction: self.direction,
                src: std::mem::take(&mut self.src_info),
                dest: std::mem::take(&mut self.dst_info),
                policy: self.policy.clone(),
                duration_ms: ms,
                error,
                tunnel: self.tunnel.take(),
                revoked_by,
                normalized_path,
                http_requests: self.http_requests.take(),
                dns_queries: self.dns_queries.take(),
                ids: self.ids.take().map(|i| *i),
                aggregate: None,
            },
        };
        let foldable = self.foldable || outcome.refused_here();
        self.telemetry.flow(event, foldable);
    }
}

impl Drop for FlowGuard {
    fn drop(&mut self) {
        self.write();
    }
}

/// An end as recorded: its registry workload, and the identity and user it acts with (the
/// registry's when this node has none for it).
pub(crate) fn endpoint(w: Option<&Workload>, end: &End) -> eve::Endpoint {
    let mut e = registry_endpoint(w);
    if let Some(id) = &end.identity {
        e.identity = Some(id.to_string());
        e.user = end.user().map(str::to_owned);
    }
    e.groups = end.groups.clone();
    e
}

/// A registry workload (or an address outside the registry) as recorded.
pub(crate) fn registry_endpoint(w: Option<&Workload>) -> eve::Endpoint {
    eve::Endpoint {
        workload: w.map(|w| w.name.clone()),
        app: w.and_then(|w| w.app.clone()),
        zone: w.and_then(|w| w.zone.clone()),
        node: w.map(|w| w.node.clone()),
        identity: w.map(|w| w.identity.to_string()),
        user: w.and_then(|w| w.user.clone()),
        groups: None,
    }
}

/// The decision part of a record.
pub(crate) fn policy_info(plan: &Plan) -> PolicyInfo {
    let (verdict, section) = match &plan.verdict {
        Verdict::Allow { rule, .. } => (Action::Allow, Some(rule.section.to_string())),
        Verdict::Deny(r) => (Action::Deny, r.section().map(str::to_owned)),
    };
    PolicyInfo {
        verdict,
        rule: plan.rule_code().to_owned(),
        section,
        mode: "enforce",
        monitor: plan
            .monitored
            .iter()
            .map(|m| MonitorInfo {
                rule: m.rule.id.to_string(),
                section: m.rule.section.to_string(),
                would: action(m.action),
            })
            .collect(),
        l7_pending: plan.needs_l7,
        ids: plan.ids_profile().map(str::to_owned),
    }
}

/// The record's name of a policy action.
pub(crate) fn action(a: eastwall_policy::Action) -> Action {
    match a {
        eastwall_policy::Action::Allow => Action::Allow,
        eastwall_policy::Action::Deny => Action::Deny,
    }
}

/// Counts the monitor rules that matched while planning.
pub(crate) fn count_monitored(telemetry: &Telemetry, direction: Direction, plan: &Plan) {
    for m in &plan.monitored {
        telemetry
            .metrics
            .decisions
            .get_or_create(&RuleLabels {
                direction: direction.as_str(),
                rule: m.rule.id.to_string(),
                mode: "monitor",
                action: m.action.as_str(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::{DenyReason, Ending, Plan};

    fn telemetry() -> Arc<Telemetry> {
        Telemetry::detached()
    }

    fn guard(t: &Arc<Telemetry>, reason: Option<DenyReason>) -> FlowGuard {
        let plan = Plan::refuse(reason.unwrap_or(DenyReason::DefaultDeny), None);
        FlowGuard::at(
            t,
            "hostA",
            Direction::Outbound,
            ("10.0.0.2:40000".parse().unwrap(), eve::Endpoint::default()),
            ("10.0.1.2:5432".parse().unwrap(), eve::Endpoint::default()),
            policy_info(&plan),
        )
    }

    fn records(t: &Telemetry) -> Vec<serde_json::Value> {
        serde_json::from_str(&t.flows.recent_json(100)).unwrap()
    }

    #[test]
    fn one_record_when_finished_with_its_outcome_and_metrics() {
        let t = telemetry();
        let g = guard(&t, Some(DenyReason::UnknownSource));
        g.finish(Outcome::Refused(DenyReason::UnknownSource));
        let r = records(&t);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0]["flow"]["state"], "rejected");
        assert_eq!(r[0]["flow"]["reason"], "denied");
        assert_eq!(r[0]["eastwall"]["policy"]["rule"], "unknown-source");
        let m = t.metrics.encode();
        assert!(
            m.contains(r#"eastwall_policy_decisions_total{direction="outbound",rule="unknown-source",mode="enforce",action="deny"} 1"#),
            "{m}"
        );
        assert!(
            m.contains(
                r#"eastwall_connections_closed_total{direction="outbound",verdict="deny"} 1"#
            ),
            "{m}"
        );
    }

    #[test]
    fn a_connection_whose_task_ends_early_is_recorded_once_as_an_error() {
        let t = telemetry();
        drop(guard(&t, None));
        // A panicking task drops its guard while unwinding.
        let t2 = t.clone();
        let joined = std::thread::spawn(move || {
            let mut g = guard(&t2, None);
            g.bytes_toserver = 3;
            panic!("the carrying task failed");
        })
        .join();
        assert!(joined.is_err());
        let r = records(&t);
        assert_eq!(r.len(), 2);
        for rec in &r {
            assert_eq!(rec["flow"]["state"], "closed");
            assert_eq!(rec["flow"]["reason"], "error");
            assert!(
                rec["eastwall"]["error"]
                    .as_str()
                    .unwrap()
                    .contains("ended before"),
                "{rec}"
            );
        }
        assert_eq!(r[1]["flow"]["bytes_toserver"], 3);
    }

    #[test]
    fn revoked_and_blocked_connections_say_by_what() {
        let t = telemetry();
        guard(&t, None).finish(Outcome::Ended(Ending::Revoked("new-rule".into())));
        let mut g = guard(&t, None);
        g.ids = Some(Box::new(IdsInfo {
            profile: "p".into(),
            mode: "prevent",
            alerts: 1,
            blocked_by: Some(9),
        }));
        g.finish(Outcome::Ended(Ending::Blocked {
            sid: 9,
            msg: "bad".into(),
        }));
        let r = records(&t);
        assert_eq!(r[0]["flow"]["reason"], "revoked");
        assert_eq!(r[0]["eastwall"]["revoked_by"], "new-rule");
        assert!(r[0]["eastwall"].get("error").is_none());
        assert_eq!(r[1]["flow"]["reason"], "ids-blocked");
        assert_eq!(r[1]["flow"]["alerted"], true);
        assert_eq!(r[1]["eastwall"]["error"], "blocked by IDS signature 9: bad");
    }
}
