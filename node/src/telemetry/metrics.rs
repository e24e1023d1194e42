//! Prometheus metrics of the node (text format on the admin endpoint's `/metrics`).

use prometheus_client::encoding::{EncodeLabelSet, text::encode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// Labels of per-direction metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DirLabels {
    /// `outbound` or `inbound`.
    pub(crate) direction: &'static str,
}

/// Labels of closed connections.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ClosedLabels {
    /// `outbound` or `inbound`.
    pub(crate) direction: &'static str,
    /// `allow` or `deny`.
    pub(crate) verdict: &'static str,
}

/// Labels of decisions by rule.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RuleLabels {
    /// `outbound` or `inbound`.
    pub(crate) direction: &'static str,
    /// Rule id (or `default-deny`, `unknown-source`).
    pub(crate) rule: String,
    /// `enforce` or `monitor`.
    pub(crate) mode: &'static str,
    /// What the rule did (or would have done).
    pub(crate) action: &'static str,
}

/// Labels of byte counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BytesLabels {
    /// `outbound` or `inbound`.
    pub(crate) direction: &'static str,
    /// `toserver` or `toclient`.
    pub(crate) flow: &'static str,
}

/// Labels of HTTP requests and DNS queries the node decided.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HttpLabels {
    /// `outbound` or `inbound`.
    pub(crate) direction: &'static str,
    /// `allow` or `deny`.
    pub(crate) verdict: &'static str,
}

/// Labels of IDS alerts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct IdsLabels {
    /// The IDS profile.
    pub(crate) profile: String,
    /// `allowed` (detect, or not blocking) or `blocked`.
    pub(crate) action: &'static str,
}

/// Labels of IDS anomalies.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct IdsAnomalyLabels {
    /// The IDS profile.
    pub(crate) profile: String,
    /// Suricata's name of the event.
    pub(crate) event: &'static str,
}

/// Labels of dropped datagrams.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DropLabels {
    /// Why: `table-full`, `source-limit`, `queue-full`, `oversized`, `malformed`.
    pub(crate) reason: &'static str,
}

/// Labels of refusals for lack of resources.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct WorkloadLabels {
    /// `workload-connection-budget` or `node-out-of-descriptors`.
    pub(crate) resource: &'static str,
    /// The source workload (`(unregistered)`: an address outside the registry; empty: not
    /// known, the node could not accept the connection).
    pub(crate) workload: String,
}

/// Labels of a certificate.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct IdentityLabels {
    /// The SPIFFE ID it proves.
    pub(crate) identity: String,
}

/// Labels of the build.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    /// The crate version.
    version: &'static str,
}

/// Labels of the policy in force.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PolicyLabels {
    /// `store` (a version of the central store) or `files`.
    pub(crate) source: &'static str,
    /// The store's version number (empty for files).
    pub(crate) version: String,
    /// `sha256:<hex>`: the store's hash of the version, or of the registry and policy files.
    pub(crate) hash: String,
}

/// A histogram per direction, with the buckets of its kind.
pub(crate) type DirHistogram = Family<DirLabels, Histogram, fn() -> Histogram>;

/// Buckets from 1 ms to about 70 minutes: how long connections live.
fn duration_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 4.0, 12))
}

/// Buckets from 1 µs to about 4 s: deciding is a lookup, its tail is what matters.
fn decision_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_001, 4.0, 12))
}

/// Buckets from 100 µs to about 7 minutes: a connect, an HTTP exchange.
fn exchange_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 4.0, 12))
}

/// Labels of certificate renewals.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RenewalLabels {
    /// `ok` or `error`.
    pub(crate) result: &'static str,
}

/// Labels of operations that succeed or fail (reloads).
pub(crate) type ResultLabels = RenewalLabels;

/// The LDAP directory's cache, copied from its own counters (see `run`).
#[derive(Default)]
pub(crate) struct DirectoryMetrics {
    /// 1 when the last query succeeded.
    pub(crate) up: Gauge,
    /// Last query latency.
    pub(crate) query_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Cache hits.
    pub(crate) hits: Counter,
    /// Cache misses.
    pub(crate) misses: Counter,
    /// Failed queries.
    pub(crate) errors: Counter,
    /// Stale answers served within the grace period.
    pub(crate) stale: Counter,
    /// Age of the oldest cached answer.
    pub(crate) oldest_age_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Cached users.
    pub(crate) entries: Gauge,
}

impl DirectoryMetrics {
    /// Brings the exported values up to `now`, given the snapshot exported before.
    pub(crate) fn update(
        &self,
        before: &eastwall_identity::directory::MetricsSnapshot,
        now: &eastwall_identity::directory::MetricsSnapshot,
    ) {
        self.up.set(i64::from(now.up));
        self.query_seconds.set(now.last_query_latency.as_secs_f64());
        self.hits.inc_by(now.hits.saturating_sub(before.hits));
        self.misses.inc_by(now.misses.saturating_sub(before.misses));
        self.errors.inc_by(now.errors.saturating_sub(before.errors));
        self.stale
            .inc_by(now.stale_served.saturating_sub(before.stale_served));
        self.oldest_age_seconds
            .set(now.oldest_entry_age.map_or(0.0, |d| d.as_secs_f64()));
        self.entries.set(now.entries as i64);
    }
}

/// All metrics of a node.
pub(crate) struct Metrics {
    registry: Registry,
    /// The name of every series the exposition can have (`eastwall_bytes_total`, a
    /// histogram's `_bucket`, `_sum`, `_count`), also of families without samples yet: what
    /// the tests check the dashboard and alert rules of `deploy/` against.
    #[cfg_attr(not(test), allow(dead_code))]
    exposed: Vec<String>,
    /// Connections accepted from capture.
    pub(crate) opened: Family<DirLabels, Counter>,
    /// Connections finished (allowed and closed, or refused).
    pub(crate) closed: Family<ClosedLabels, Counter>,
    /// Every rule that decided or (monitor) matched.
    pub(crate) decisions: Family<RuleLabels, Counter>,
    /// Bytes relayed.
    pub(crate) bytes: Family<BytesLabels, Counter>,
    /// Connections being relayed now.
    pub(crate) active: Family<DirLabels, Gauge>,
    /// Allowed connections whose destination could not be reached.
    pub(crate) upstream_errors: Family<DirLabels, Counter>,
    /// Policy and registry currently in force: number of rules.
    pub(crate) policy_rules: Gauge,
    /// Which policy is in force (one series, value 1).
    pub(crate) policy_info: Family<PolicyLabels, Gauge>,
    /// The labels `policy_info` shows.
    policy_shown: std::sync::Mutex<Option<PolicyLabels>>,
    /// When the policy in force was put in force (start-up or reload), Unix seconds.
    pub(crate) policy_loaded_at: Gauge,
    /// When each of the node's workload certificates expires, Unix seconds.
    pub(crate) cert_expiry: Family<IdentityLabels, Gauge>,
    /// How long connections lived, accept to close.
    pub(crate) connection_seconds: DirHistogram,
    /// How long deciding a connection or a request took.
    pub(crate) decision_seconds: DirHistogram,
    /// How long connecting to a server took (successful connects).
    pub(crate) upstream_connect_seconds: DirHistogram,
    /// How long an HTTP request the node decided took, until its response's head.
    pub(crate) http_request_seconds: DirHistogram,
    /// Tunnel handshakes this node refused (foreign CA, expired certificate, ...).
    pub(crate) tunnel_handshake_failures: Counter,
    /// Tunnel connections this node dialed (one per source identity, destination node and
    /// destination identity while it lives; streams share it).
    pub(crate) tunnel_dials: Counter,
    /// Certificate files that failed to reload.
    pub(crate) cert_reload_failures: Counter,
    /// Flow records that could not be written to the flow log file.
    pub(crate) flow_log_write_errors: Counter,
    /// Flow records dropped from the flow log file because its queue was full.
    pub(crate) flow_log_dropped: Counter,
    /// Records for the collector, by what became of them: `sent`, `rejected` (by the
    /// collector), `dropped` (the backlog was full).
    pub(crate) flow_export: Family<ResultLabels, Counter>,
    /// The directory of users' groups.
    pub(crate) directory: DirectoryMetrics,
    /// Certificate renewals from the CA, by result (`ok`, `error`).
    pub(crate) cert_renewals: Family<RenewalLabels, Counter>,
    /// Registry and policy reloads, by result (`ok`, `error`: rejected, old rules kept).
    pub(crate) policy_reloads: Family<ResultLabels, Counter>,
    /// HTTP requests decided one by one (L7 rules), by verdict.
    pub(crate) http_requests: Family<HttpLabels, Counter>,
    /// DNS queries decided one by one (`dns` conditions), by verdict.
    pub(crate) dns_queries: Family<HttpLabels, Counter>,
    /// Local connections of `localUsers` workloads attributed to a user (`ok`) or not
    /// (`unknown`).
    pub(crate) local_user_lookups: Family<ResultLabels, Counter>,
    /// IDS alerts, by profile and action.
    pub(crate) ids_alerts: Family<IdsLabels, Counter>,
    /// Anomalies the IDS noticed (decompression bombs, too many encodings), by profile and
    /// event.
    pub(crate) ids_anomalies: Family<IdsAnomalyLabels, Counter>,
    /// Packets dropped by capture for a spoofed source address (every one, records are
    /// sampled).
    pub(crate) spoofed_packets: Counter,
    /// UDP sessions in the node's table.
    pub(crate) udp_sessions: Gauge,
    /// UDP sessions evicted to make room (the table was full).
    pub(crate) udp_evictions: Counter,
    /// UDP datagrams dropped before any session took them, by reason.
    pub(crate) udp_drops: Family<DropLabels, Counter>,
    /// Queued packets of other protocols dropped before a decision, by reason.
    pub(crate) packet_drops: Family<DropLabels, Counter>,
    /// Connections (and flows) this node refused, all rules together (for the node's status
    /// in the central store; `denied` has them by rule).
    pub(crate) denied_all: Counter,
    /// Flow records folded into an aggregate record (a flood of one kind of flow).
    pub(crate) records_aggregated: Counter,
    /// New connections refused for lack of resources, by resource and workload.
    pub(crate) resource_refusals: Family<WorkloadLabels, Counter>,
    /// Connections holding a slot of the node's budget.
    pub(crate) connections_held: Gauge,
    /// Connections the node carries at once (its budget, from the open-file limit).
    pub(crate) connection_budget: Gauge,
    /// The node's open-file limit.
    pub(crate) open_files_limit: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("eastwall");
        let mut exposed = Vec::new();
        let m = Metrics {
            opened: Family::default(),
            closed: Family::default(),
            decisions: Family::default(),
            bytes: Family::default(),
            active: Family::default(),
            upstream_errors: Family::default(),
            policy_rules: Gauge::default(),
            policy_info: Family::default(),
            policy_shown: Default::default(),
            policy_loaded_at: Gauge::default(),
            cert_expiry: Family::default(),
            connection_seconds: Family::new_with_constructor(duration_buckets),
            decision_seconds: Family::new_with_constructor(decision_buckets),
            upstream_connect_seconds: Family::new_with_constructor(exchange_buckets),
            http_request_seconds: Family::new_with_constructor(exchange_buckets),
            tunnel_handshake_failures: Counter::default(),
            tunnel_dials: Counter::default(),
            cert_reload_failures: Counter::default(),
            flow_log_write_errors: Counter::default(),
            flow_log_dropped: Counter::default(),
            flow_export: Family::default(),
            directory: DirectoryMetrics::default(),
            cert_renewals: Family::default(),
            policy_reloads: Family::default(),
            http_requests: Family::default(),
            dns_queries: Family::default(),
            local_user_lookups: Family::default(),
            ids_alerts: Family::default(),
            ids_anomalies: Family::default(),
            spoofed_packets: Counter::default(),
            udp_sessions: Gauge::default(),
            udp_evictions: Counter::default(),
            udp_drops: Family::default(),
            packet_drops: Family::default(),
            records_aggregated: Counter::default(),
            denied_all: Counter::default(),
            resource_refusals: Family::default(),
            connections_held: Gauge::default(),
            connection_budget: Gauge::default(),
            open_files_limit: Gauge::default(),
            registry: Registry::default(),
            exposed: Vec::new(),
        };
        // `eastwall_build_info{version="…"} 1`: which build each node runs, for dashboards
        // and for rollouts. A gauge, as Prometheus's own `prometheus_build_info`: the
        // OpenMetrics `info` type is not read by every parser (promtool's).
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        add(
            &mut registry,
            &mut exposed,
            "build_info",
            "The eastwall build this node runs",
            build,
        );
        add(
            &mut registry,
            &mut exposed,
            "connections_opened",
            "Connections accepted from capture",
            m.opened.clone(),
        );
        add(
            &mut registry,
            &mut exposed,
            "connections_closed",
            "Connections finished",
            m.closed.clone(),
        );
        add_unit(
            &mut registry,
            &mut exposed,
            "connection_duration",
            "How long connections lived, accept to close",
            Unit::Seconds,
            m.connection_seconds.clone(),
        );
        add_unit(
            &mut registry,
            &mut exposed,
            "decision_duration",
            "How long deciding a connection, an HTTP request or a DNS query took",
            Unit::Seconds,
            m.decision_seconds.clone(),
        );
        add_unit(
            &mut registry,
            &mut exposed,
            "upstream_connect_duration",
            "How long connecting to a server took (successful connects)",
            Unit::Seconds,
            m.upstream_connect_seconds.clone(),
        );
        add_unit(
            &mut registry,
            &mut exposed,
            "http_request_duration",
            "How long HTTP requests the node decided took, until the response's head",
            Unit::Seconds,
            m.http_request_seconds.clone(),
        );
        add(
            &mut registry,
            &mut exposed,
            "policy_info",
            "The registry and policy in force: source (store or files), store version, hash",
            m.policy_info.clone(),
        );
        add_unit(
            &mut registry,
            &mut exposed,
            "policy_loaded_timestamp",
            "When the policy in force was loaded (start-up or successful reload), Unix time",
            Unit::Seconds,
            m.policy_loaded_at.clone(),
        );
        add_unit(
            &mut registry,
            &mut exposed,
            "certificate_expiry_timestamp",
            "When each workload certificate of this node expires, Unix time",
            Unit::Seconds,
            m.cert_expiry.clone(),
        );
        add(
            &mut registry,
            &mut exposed,
            "policy_decisions",
            "Rules that decided, or matched in monitor mode",
            m.decisions.clone(),
        );
        add(
            &mut registry,
            &mut exposed,
            "bytes",
            "Bytes relayed",
            m.bytes.clone(),
        );
        add(
            &mut registry,
            &mut exposed,
            "connections_active",
            "Connections being relayed",
            m.active.clone(),
        );
        add(
            &mut registry,
            &mut exposed,
            "upstream_errors",
            "Allowed connections whose destination was unreachable",
            m.upstream_errors.clone(),
        );
        add(
            &mut registry,
            &mut exposed,
            "policy_reloads",
            "Registry and policy reloads, by result (error: rejected, the rules in force stay)",
            m.policy_reloads.clone(),
        );
        add(
            &mut registry,
            &mut exposed,
            "http_requests",
            "HTTP requests decided one by one (rules with L7 conditions), by verdict",
            m.http_requests.clone(),
        );
        add(
            &mut registry,
            &mut exposed,
            "dns_queries",
            "DNS queries decided one by one (rules with dns conditions), by verdict",
            m.dns_queries.clone(),
        );
        add(
            &mut registry,
            &mut exposed,
            "local_user_lookups",
            "Local connections of localUsers workloads attributed to a user (ok) or not (unknown)",
            m.local_user_lookups.clone(),
        );
        add(
            &mut registry,
            &mut exposed,
            "ids_alerts",
            "IDS alerts, by profile and action (blocked: prevent mode stopped the stream)",
            m.ids_alerts.clone(),
        );
        add(
            &mut registry,
            &mut exposed,
            "ids_anomalies",
            "IDS anomalies, by profile and event (COMPRESSION_BOMB: a body's decoding stopped at its inspection limit at a bomb's ratio; TOO_MANY_ENCODING_LAYERS)",
            m.ids_anomalies.clone(),
        );
        add(
            &mut registry,
            &mut exposed,
            "spoofed_packets",
            "Packets dropped by capture for a spoofed source address",
            m.spoofed_packets.clone(),
        );
        add(
            &mut registry,
            &mut exposed,
            "udp_sessions",
            "UDP sessions in the node's table",
            m.udp_sessions.clone(),
        );
        add(
            &mut registry,
            &mut exposed,
            "udp_sessions_evicted",
            "UDP sessions evicted because the table was full (idle ones first)",
            m.udp_evictions.clone(),
        );
        add(
            &mut registry,
            &mut exposed,
            "udp_datagrams_dropped",
            "UDP datagrams dropped before any session took them, by reason",
            m.udp_drops.clone(),
        );
        add(
            &mut registry,
            &mut exposed,
            "packets_dropped",
            "Queued packets of other protocols than TCP and UDP dropped before a decision, by reason",
            m.packet_drops.clone(),
        );
        add(
            &mut registry,
            &mut exposed,
            "flow_records_aggregated",
            "Flow records folded into an aggregate record: a flood of one kind of flow",
            m.records_aggregated.clone(),
        );
        add(
            &mut registry,
            &mut exposed,
            "resource_refusals",
            "New connections refused for lack of resources: the workload's connection budget, or the node's descriptors",
            m.resource_refusals.clone(),
        );
        add(
            &mut registry,
            &mut exposed,
            "connections_held",
            "Connections holding a slot of the node's connection budget",
            m.connections_held.clone(),
        );
        add(
            &mut registry,
            &mut exposed,
            "connection_budget",
            "Connections the node carries at once, from its open-file limit",
            m.connection_budget.clone(),
        );
        add(
            &mut registry,
            &mut exposed,
            "open_files_limit",
            "The node's open-file limit",
            m.open_files_limit.clone(),
        );
        add(
            &mut registry,
            &mut exposed,
            "policy_rules",
            "Rules in the policy in force",
            m.policy_rules.clone(),
        );
        add(
            &mut registry,
            &mut exposed,
            "tunnel_dials",
            "Tunnel connections dialed",
            m.tunnel_dials.clone(),
        );
        add(
            &mut registry,
            &mut exposed,
            "tunnel_handshake_failures",
            "Tunnel handshakes refused by this node",
            m.tunnel_handshake_failures.clone(),
        );
        add(
            &mut registry,
            &mut exposed,
            "cert_reload_failures",
            "Certificate files that failed to reload",
            m.cert_reload_failures.clone(),
        );
        add(
            &mut registry,
            &mut exposed,
            "cert_renewals",
            "Certificate renewals from the CA, by result",
            m.cert_renewals.clone(),
        );
        add(
            &mut registry,
            &mut exposed,
            "flow_log_write_errors",
            "Flow records that could not be written to the flow log file",
            m.flow_log_write_errors.clone(),
        );
        add(
            &mut registry,
            &mut exposed,
            "flow_export_records",
            "Flow records for the collector, by result: sent, rejected (by the collector), dropped (the backlog was full)",
            m.flow_export.clone(),
        );
        add(
            &mut registry,
            &mut exposed,
            "flow_log_dropped",
            "Flow records dropped from the flow log file because its queue was full (the disk is slower than the records come)",
            m.flow_log_dropped.clone(),
        );
        let d = &m.directory;
        add(
            &mut registry,
            &mut exposed,
            "directory_up",
            "Whether the LDAP directory answered its last query (1) or not (0)",
            d.up.clone(),
        );
        add(
            &mut registry,
            &mut exposed,
            "directory_query_seconds",
            "Latency of the last LDAP query",
            d.query_seconds.clone(),
        );
        add(
            &mut registry,
            &mut exposed,
            "directory_cache_hits",
            "Group lookups answered from the cache",
            d.hits.clone(),
        );
        add(
            &mut registry,
            &mut exposed,
            "directory_cache_misses",
            "Group lookups that queried the directory",
            d.misses.clone(),
        );
        add(
            &mut registry,
            &mut exposed,
            "directory_errors",
            "Directory queries that failed",
            d.errors.clone(),
        );
        add(
            &mut registry,
            &mut exposed,
            "directory_stale_answers",
            "Answers served past their refresh while the directory failed",
            d.stale.clone(),
        );
        add(
            &mut registry,
            &mut exposed,
            "directory_oldest_entry_age_seconds",
            "Age of the oldest cached answer",
            d.oldest_age_seconds.clone(),
        );
        add(
            &mut registry,
            &mut exposed,
            "directory_cached_users",
            "Users with a cached answer",
            d.entries.clone(),
        );
        Metrics {
            registry,
            exposed,
            ..m
        }
    }
}

impl Metrics {
    /// Records that a policy of `rule_count` rules is in force from now: its size, which it
    /// is, since when.
    pub(crate) fn policy_in_force(&self, rule_count: usize, labels: PolicyLabels) {
        self.policy_rules.set(rule_count as i64);
        // The new series first, then the old one goes: a scrape never sees none.
        self.policy_info.get_or_create(&labels).set(1);
        let mut shown = self.policy_shown.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = shown.replace(labels.clone())
            && old != labels
        {
            self.policy_info.remove(&old);
        }
        self.policy_loaded_at
            .set(unix_secs(std::time::SystemTime::now()));
    }

    /// Sets the expiry of the node's workload certificates; identities no longer held
    /// (`shown` before, not now) are dropped.
    pub(crate) fn certificates(
        &self,
        expiries: &[(impl ToString, std::time::SystemTime)],
        shown: &mut Vec<IdentityLabels>,
    ) {
        let now: Vec<IdentityLabels> = expiries
            .iter()
            .map(|(id, not_after)| {
                let labels = IdentityLabels {
                    identity: id.to_string(),
                };
                self.cert_expiry
                    .get_or_create(&labels)
                    .set(unix_secs(*not_after));
                labels
            })
            .collect();
        for gone in shown.iter().filter(|l| !now.contains(l)) {
            self.cert_expiry.remove(gone);
        }
        *shown = now;
    }

    /// Every series name the exposition can have.
    #[cfg(test)]
    pub(crate) fn exposed_names(&self) -> &[String] {
        &self.exposed
    }

    /// The Prometheus text exposition.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// The Prometheus text format (0.0.4) of an OpenMetrics exposition `om`, for scrapers that
/// do not ask for OpenMetrics (and promtool, which reads only this format): a counter's
/// family is named with its `_total`, `# UNIT` and `# EOF` go, samples are the same.
pub(crate) fn classic_text(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    // prometheus_client writes each family as HELP, TYPE, (UNIT,) samples.
    let mut help: Option<(&str, &str)> = None;
    for line in om.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest.split_once(' ').unwrap_or((rest, "")));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let name = if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_owned()
            };
            if let Some((_, text)) = help.take() {
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
        } else if line.starts_with("# UNIT ") || line == "# EOF" {
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Registers `metric` as `eastwall_<name>` and notes the names its samples take.
fn add<M>(registry: &mut Registry, exposed: &mut Vec<String>, name: &str, help: &str, metric: M)
where
    M: prometheus_client::registry::Metric + prometheus_client::metrics::TypedMetric,
{
    note::<M>(exposed, format!("eastwall_{name}"));
    registry.register(name, help, metric);
}

/// [`add`], with a unit (its name ends with the unit's).
fn add_unit<M>(
    registry: &mut Registry,
    exposed: &mut Vec<String>,
    name: &str,
    help: &str,
    unit: Unit,
    metric: M,
) where
    M: prometheus_client::registry::Metric + prometheus_client::metrics::TypedMetric,
{
    note::<M>(exposed, format!("eastwall_{name}_{}", unit.as_str()));
    registry.register_with_unit(name, help, unit, metric);
}

fn note<M: prometheus_client::metrics::TypedMetric>(exposed: &mut Vec<String>, base: String) {
    use prometheus_client::metrics::MetricType;
    match M::TYPE {
        MetricType::Counter => exposed.push(format!("{base}_total")),
        MetricType::Histogram => {
            for part in ["_bucket", "_sum", "_count"] {
                exposed.push(format!("{base}{part}"));
            }
        }
        _ => exposed.push(base),
    }
}

/// Whole seconds since 1970 (0 before).
fn unix_secs(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_in_force_and_certificate_expiry_are_one_series_each() {
        let m = Metrics::default();
        let files = |hash: &str| PolicyLabels {
            source: "files",
            version: String::new(),
            hash: hash.into(),
        };
        m.policy_in_force(3, files("sha256:aa"));
        m.policy_in_force(4, files("sha256:bb"));
        let text = m.encode();
        assert!(text.contains("eastwall_policy_rules 4\n"), "{text}");
        assert!(
            text.contains(r#"eastwall_policy_info{source="files",version="",hash="sha256:bb"} 1"#),
            "{text}"
        );
        assert!(!text.contains("sha256:aa"), "{text}");
        assert!(text.contains("# UNIT eastwall_policy_loaded_timestamp_seconds seconds"));
        let at = |secs| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        let mut shown = Vec::new();
        m.certificates(
            &[("spiffe://td/a", at(100)), ("spiffe://td/b", at(200))],
            &mut shown,
        );
        m.certificates(&[("spiffe://td/b", at(300))], &mut shown);
        let text = m.encode();
        assert!(
            text.contains(
                r#"eastwall_certificate_expiry_timestamp_seconds{identity="spiffe://td/b"} 300"#
            ),
            "{text}"
        );
        assert!(!text.contains("spiffe://td/a"), "{text}");
        m.decision_seconds
            .get_or_create(&DirLabels {
                direction: "inbound",
            })
            .observe(0.000_003);
        let text = m.encode();
        assert!(
            text.contains(
                r#"eastwall_decision_duration_seconds_bucket{le="0.000004",direction="inbound"} 1"#
            ),
            "{text}"
        );
    }

    /// The dashboard and the alert rules in `deploy/` name only series a node exposes, and
    /// the exposition names only series this list has.
    #[test]
    fn the_dashboard_and_alert_rules_name_series_the_node_exposes() {
        let m = Metrics::default();
        let exposed = m.exposed_names();
        for (file, text) in [
            (
                "deploy/grafana/eastwall-node.json",
                include_str!("../../../deploy/grafana/eastwall-node.json"),
            ),
            (
                "deploy/prometheus/eastwall-alerts.yaml",
                include_str!("../../../deploy/prometheus/eastwall-alerts.yaml"),
            ),
        ] {
            let mut rest = text;
            let mut named = 0;
            while let Some(i) = rest.find("eastwall_") {
                let tail = &rest[i..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                let name = &tail[..end];
                assert!(
                    exposed.iter().any(|e| e == name),
                    "{file} names {name}, which no node exposes"
                );
                named += 1;
                rest = &tail[end..];
            }
            assert!(named > 10, "{file}: {named}");
        }
        // Every sample of a full exposition is one of the names.
        m.closed
            .get_or_create(&ClosedLabels {
                direction: "inbound",
                verdict: "allow",
            })
            .inc();
        m.decision_seconds
            .get_or_create(&DirLabels {
                direction: "inbound",
            })
            .observe(0.1);
        for line in classic_text(&m.encode())
            .lines()
            .filter(|l| !l.starts_with('#'))
        {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(exposed.iter().any(|e| e == name), "{name} is not listed");
        }
    }

    #[test]
    fn the_classic_text_format_names_counters_with_their_total() {
        let m = Metrics::default();
        m.closed
            .get_or_create(&ClosedLabels {
                direction: "inbound",
                verdict: "allow",
            })
            .inc();
        m.upstream_connect_seconds
            .get_or_create(&DirLabels {
                direction: "inbound",
            })
            .observe(0.01);
        let text = classic_text(&m.encode());
        assert!(
            text.contains(
                "# HELP eastwall_connections_closed_total Connections finished.\n\
                 # TYPE eastwall_connections_closed_total counter\n\
                 eastwall_connections_closed_total{direction=\"inbound\",verdict=\"allow\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE eastwall_upstream_connect_duration_seconds histogram\n"),
            "{text}"
        );
        assert!(
            !text.contains("# UNIT") && !text.contains("# EOF"),
            "{text}"
        );
    }

    #[test]
    fn exposition_names_rules_and_bytes() {
        let m = Metrics::default();
        m.decisions
            .get_or_create(&RuleLabels {
                direction: "outbound",
                rule: "dev-not-prod".into(),
                mode: "enforce",
                action: "deny",
            })
            .inc();
        m.bytes
            .get_or_create(&BytesLabels {
                direction: "outbound",
                flow: "toserver",
            })
            .inc_by(42);
        let text = m.encode();
        assert!(text.contains("eastwall_policy_decisions_total{direction=\"outbound\",rule=\"dev-not-prod\",mode=\"enforce\",action=\"deny\"} 1"), "{text}");
        assert!(
            text.contains("eastwall_bytes_total{direction=\"outbound\",flow=\"toserver\"} 42"),
            "{text}"
        );
        m.cert_renewals
            .get_or_create(&RenewalLabels { result: "ok" })
            .inc();
        let text = m.encode();
        assert!(
            text.contains("eastwall_cert_renewals_total{result=\"ok\"} 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
        let build = format!(
            "eastwall_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&build), "{text}");
    }

    #[test]
    fn directory_metrics_follow_the_cache() {
        use eastwall_identity::directory::MetricsSnapshot;
        let m = Metrics::default();
        let first = MetricsSnapshot {
            hits: 5,
            misses: 2,
            up: true,
            entries: 2,
            ..MetricsSnapshot::default()
        };
        m.directory.update(&MetricsSnapshot::default(), &first);
        let second = MetricsSnapshot {
            hits: 9,
            misses: 2,
            errors: 1,
            up: false,
            oldest_entry_age: Some(std::time::Duration::from_secs(30)),
            entries: 2,
            ..first
        };
        m.directory.update(&first, &second);
        let text = m.encode();
        for line in [
            "eastwall_directory_up 0",
            "eastwall_directory_cache_hits_total 9",
            "eastwall_directory_cache_misses_total 2",
            "eastwall_directory_errors_total 1",
            "eastwall_directory_oldest_entry_age_seconds 30.0",
            "eastwall_directory_cached_users 2",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }
}
