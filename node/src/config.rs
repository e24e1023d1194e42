//! The node's own configuration file (`kind: NodeConfig`): every section's settings as
//! typed values, validated with `FILE:LINE:COL` errors. A leaf: it imports nothing else of
//! the crate, and every module takes its own section from here.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use eastwall_policy::{Diagnostic, Diagnostics, Severity};
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

/// API version of every eastwall file.
pub const API_VERSION: &str = "eastwall.dev/v1";

/// Default mark on packets that capture hands to the transparent listeners.
pub const DEFAULT_CAPTURE_MARK: u32 = 0x1e57_0001;
/// Default mark on the node's own upstream sockets, so they are never captured again.
pub const DEFAULT_OWN_MARK: u32 = 0x1e57_0002;
/// Default policy-routing table that delivers captured packets locally.
pub const DEFAULT_ROUTE_TABLE: u32 = 157;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct File {
    api_version: Spanned<String>,
    kind: Spanned<String>,
    #[serde(default)]
    metadata: Option<Metadata>,
    spec: Spec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    #[allow(dead_code)]
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Spec {
    /// Default: the host's name (one config for every host).
    #[serde(default)]
    node_name: Option<Spanned<String>>,
    #[serde(default)]
    registry: Option<PathBuf>,
    #[serde(default)]
    policy: Option<PathBuf>,
    #[serde(default)]
    store: Option<Spanned<StoreDoc>>,
    #[serde(default = "default_capture")]
    capture: Spanned<CaptureSpec>,
    #[serde(default = "default_admin")]
    admin: Spanned<AdminSpec>,
    #[serde(default)]
    metrics: Option<MetricsSpec>,
    #[serde(default)]
    flow_log: FlowLogSpec,
    #[serde(default = "default_runtime")]
    runtime: Spanned<RuntimeSpec>,
    #[serde(default)]
    identity: Option<Spanned<IdentityDoc>>,
    #[serde(default = "default_tunnel")]
    tunnel: Spanned<TunnelSpec>,
    #[serde(default)]
    directory: Option<DirectorySpec>,
    #[serde(default)]
    l7: L7Spec,
    #[serde(default = "default_udp")]
    udp: Spanned<UdpSpec>,
    #[serde(default)]
    ids: Option<IdsSpec>,
    #[serde(default = "default_limits")]
    limits: Spanned<LimitsSpec>,
    #[serde(default)]
    export: Option<Spanned<ExportSpec>>,
}

/// The central store, as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct StoreDoc {
    endpoints: Vec<String>,
    ca_file: PathBuf,
    cert_file: PathBuf,
    key_file: PathBuf,
    #[serde(default = "default_store_prefix")]
    prefix: String,
    #[serde(default = "default_state_dir")]
    state_dir: PathBuf,
}

fn default_store_prefix() -> String {
    "/eastwall/".to_owned()
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/eastwall")
}

/// The central store the node takes its registry and policy from (`spec.store`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSpec {
    /// How to reach it (this node's client certificate: common name `node-<name>`).
    pub store: eastwall_store::StoreSpec,
    /// Where the last applied configuration is kept (`registry.yaml`, `policy.yaml`,
    /// `rules/<set>.rules`): what the node enforces, and starts from when the store is
    /// unreachable.
    pub state_dir: PathBuf,
}

impl StoreSpec {
    /// Where the store's IDS rule sets are kept: `<stateDir>/rules/<set>.rules`.
    pub fn rules_dir(&self) -> PathBuf {
        self.state_dir.join("rules")
    }
}

/// Where this node's workload certificates come from, as written in the file: exactly one of
/// `certDir` and `ca`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct IdentityDoc {
    trust_bundle: PathBuf,
    #[serde(default)]
    cert_dir: Option<PathBuf>,
    #[serde(default)]
    reload_secs: Option<u64>,
    #[serde(default)]
    ca: Option<CaDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CaDoc {
    url: String,
    node_cert: PathBuf,
    node_key: PathBuf,
    #[serde(default)]
    cert_secs: Option<u64>,
    #[serde(default)]
    bootstrap_token: Option<PathBuf>,
}

/// Where this node's workload certificates come from. Without it the node runs without the
/// tunnel and decides on addresses only.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentitySpec {
    /// PEM file with the trust domain's CA certificate(s).
    pub trust_bundle: PathBuf,
    /// Files provisioned by the operator, or the eastwall CA.
    pub source: CertSource,
}

/// How a node obtains its workloads' certificates.
#[derive(Debug, Clone, PartialEq)]
pub enum CertSource {
    /// `certDir`: `<workload>.crt` and `<workload>.key` for each local workload, provided by
    /// the operator (own PKI) and reloaded when they change.
    Files {
        /// The folder.
        cert_dir: PathBuf,
        /// Seconds between checks of the files for changes.
        reload_secs: u64,
    },
    /// `ca`: the node makes a key and a signing request per local workload identity and has
    /// `eastwall ca serve` sign it, authenticating with its node certificate; it renews each
    /// certificate at half its lifetime.
    Ca(CaClientSpec),
}

/// The node's client of `eastwall ca serve` (`identity.ca`).
#[derive(Debug, Clone, PartialEq)]
pub struct CaClientSpec {
    /// `https://HOST:PORT` of the CA service.
    pub url: String,
    /// The node's certificate (`spiffe://<td>/node/<nodeName>`), PEM; re-read for every
    /// request, so it can be replaced in place.
    pub node_cert: PathBuf,
    /// The node certificate's private key, PEM.
    pub node_key: PathBuf,
    /// Lifetime the node asks for, in seconds; none takes the CA's (`--cert-secs`).
    pub cert_secs: Option<u64>,
    /// A file holding a bootstrap token (`eastwall ca token`): while `node_cert` does not
    /// exist, the node enrolls with it for its node certificate and writes it there.
    pub bootstrap_token: Option<PathBuf>,
}

fn default_reload_secs() -> u64 {
    2
}

/// The tunnel between nodes.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct TunnelSpec {
    /// Port of the tunnel, UDP for QUIC and TCP for HTTP/2, the same on every node.
    pub port: u16,
    /// Which transport carries this node's outgoing streams: `quic`, `h2` or `auto`.
    pub transport: TransportMode,
    /// Streams a pooled connection carries before another is dialed to the same peer.
    pub streams_per_connection: usize,
    /// Most pooled connections per (source identity, destination node, destination
    /// identity); 0 means one per runtime worker thread.
    pub max_connections_per_peer: usize,
}

impl Default for TunnelSpec {
    fn default() -> Self {
        TunnelSpec {
            port: 15008,
            transport: TransportMode::default(),
            streams_per_connection: 100,
            max_connections_per_peer: 0,
        }
    }
}

fn default_tunnel() -> Spanned<TunnelSpec> {
    Spanned::new(TunnelSpec::default(), Location::UNKNOWN, Location::UNKNOWN)
}

fn default_udp() -> Spanned<UdpSpec> {
    Spanned::new(UdpSpec::default(), Location::UNKNOWN, Location::UNKNOWN)
}

fn default_capture() -> Spanned<CaptureSpec> {
    Spanned::new(CaptureSpec::default(), Location::UNKNOWN, Location::UNKNOWN)
}

fn default_admin() -> Spanned<AdminSpec> {
    Spanned::new(AdminSpec::default(), Location::UNKNOWN, Location::UNKNOWN)
}

fn default_limits() -> Spanned<LimitsSpec> {
    Spanned::new(LimitsSpec::default(), Location::UNKNOWN, Location::UNKNOWN)
}

fn default_runtime() -> Spanned<RuntimeSpec> {
    Spanned::new(RuntimeSpec::default(), Location::UNKNOWN, Location::UNKNOWN)
}

/// Most runtime worker threads a node may ask for.
pub const MAX_WORKER_THREADS: usize = 512;

/// Which traffic the node captures, and the kernel plumbing it uses to do so.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct CaptureSpec {
    /// Workload-facing interfaces: every TCP connection arriving on them is captured
    /// outbound. nft wildcards (`veth*`) are allowed.
    pub interfaces: Vec<String>,
    /// Also capture TCP connections that processes of the host itself open.
    pub local_traffic: bool,
    /// Capture TCP connections arriving from elsewhere for this host's workloads.
    pub inbound: bool,
    /// Port of the outbound transparent listener.
    pub outbound_port: u16,
    /// Port of the inbound transparent listener.
    pub inbound_port: u16,

    /// Packet mark that routes captured packets to the local listeners.
    pub mark: u32,
    /// Mark carried by the node's own upstream sockets.
    pub own_mark: u32,
    /// Policy-routing table used for local delivery of marked packets.
    pub route_table: u32,
    /// Name of the nftables table the node owns (family `inet`).
    pub table: String,
    /// Seconds allowed for an upstream connect before the client is reset.
    pub connect_timeout_secs: u64,
    /// The netfilter queue that new flows of other protocols than TCP and UDP from the
    /// workloads go to (outbound); the next number takes those to them (inbound).
    pub packet_queue: u16,
}

impl Default for CaptureSpec {
    fn default() -> Self {
        CaptureSpec {
            interfaces: Vec::new(),
            local_traffic: false,
            inbound: true,
            outbound_port: 15001,
            inbound_port: 15006,
            mark: DEFAULT_CAPTURE_MARK,
            own_mark: DEFAULT_OWN_MARK,
            route_table: DEFAULT_ROUTE_TABLE,
            table: "eastwall".into(),
            connect_timeout_secs: 10,
            packet_queue: 15001,
        }
    }
}

/// The admin endpoint.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct AdminSpec {
    /// Address of the admin HTTP endpoint (loopback by default).
    pub listen: SocketAddr,
    /// A file holding the bearer token every request must carry (`Authorization: Bearer
    /// …`); required when `listen` is off loopback.
    pub token_file: Option<PathBuf>,
}

impl Default for AdminSpec {
    fn default() -> Self {
        AdminSpec {
            listen: SocketAddr::from(([127, 0, 0, 1], 15000)),
            token_file: None,
        }
    }
}

/// A listener for Prometheus and probes only: `/metrics`, `/healthz`, `/livez`, without
/// authentication (no flows, nothing that changes the node).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MetricsSpec {
    /// Its address (`0.0.0.0:15020` for a Prometheus on another host).
    pub listen: SocketAddr,
}

/// Where flow records go.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct FlowLogSpec {
    /// JSON-lines file the records are appended to; none keeps them only in memory.
    pub path: Option<PathBuf>,
    /// How many recent records `/flows` serves.
    pub recent: usize,
    /// Size at which the file is rotated (`flows.json` → `flows.json.1` → ...).
    pub max_bytes: u64,
    /// Rotated files kept; 0: the file starts over when it is full.
    pub keep: u32,
}

impl Default for FlowLogSpec {
    fn default() -> Self {
        FlowLogSpec {
            path: Some(PathBuf::from("/var/log/eastwall/flows.json")),
            recent: 1024,
            max_bytes: 256 << 20,
            keep: 4,
        }
    }
}

/// How the node inspects connections that rules with L7 conditions apply to.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct L7Spec {
    /// Milliseconds to wait for a client's first bytes before the connection is taken for a
    /// server-first protocol (opaque TCP).
    pub first_bytes_ms: u64,
    /// Whether the body of the node's 403 names the deciding rule (else a generic text).
    pub deny_body_names_rule: bool,
    /// Seconds a client may take to send a request's header block (slow senders are cut
    /// with 408 and the connection closed).
    pub header_timeout_secs: u64,
    /// Largest request header block in bytes (HTTP/1 and HTTP/2); larger gets 431.
    pub max_header_bytes: usize,
    /// What a client gets for a DNS query the policy denies.
    pub dns_denied: DnsDenied,
}

/// What the node does with a DNS query the policy denies.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DnsDenied {
    /// Answer REFUSED (same id and question): the client's resolver gives up at once.
    #[default]
    Refuse,
    /// Drop it: the client waits for its timeout, and learns nothing of the policy.
    Drop,
}

impl Default for L7Spec {
    fn default() -> Self {
        L7Spec {
            first_bytes_ms: 2000,
            deny_body_names_rule: true,
            header_timeout_secs: 10,
            max_header_bytes: 64 * 1024,
            dns_denied: DnsDenied::Refuse,
        }
    }
}

/// How the node keeps UDP sessions (one per 5-tuple, decided at its first datagram).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct UdpSpec {
    /// Seconds a session lives without a datagram either way.
    pub idle_secs: u64,
    /// Seconds a DNS session (port 53) lives without a datagram: a query and its answer; also
    /// how long a DNS over TCP connection the node reads may stay without a message.
    pub dns_idle_secs: u64,
    /// Most sessions of the node at once; past it, idle sessions are evicted first, then
    /// new ones are refused (counted).
    pub max_sessions: usize,
    /// Most sessions one source address holds at once (a flood from one workload cannot
    /// take the whole table).
    pub max_sessions_per_source: usize,
}

impl UdpSpec {
    /// How long a session to `dst_port` lives without a datagram.
    pub fn idle_for(&self, dst_port: u16) -> std::time::Duration {
        std::time::Duration::from_secs(if dst_port == 53 {
            self.dns_idle_secs
        } else {
            self.idle_secs
        })
    }
}

impl Default for UdpSpec {
    fn default() -> Self {
        UdpSpec {
            idle_secs: 60,
            dns_idle_secs: 5,
            max_sessions: 65_536,
            max_sessions_per_source: 4_096,
        }
    }
}

/// How many connections the node carries at once (TCP connections, tunnel streams, UDP
/// sessions), in all and per source workload.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct LimitsSpec {
    /// Connections one source workload (or one address outside the registry) holds at
    /// once; 0: a quarter of the node's budget.
    pub connections_per_workload: usize,
    /// File descriptors kept for the node's own work (tunnel, admin endpoint, logs,
    /// reloads); the node's budget is half of what the open-file limit leaves.
    pub reserved_descriptors: u64,
}

/// Fewest descriptors `limits.reservedDescriptors` may keep.
pub const MIN_RESERVED_DESCRIPTORS: u64 = 64;

impl Default for LimitsSpec {
    fn default() -> Self {
        LimitsSpec {
            connections_per_workload: 0,
            reserved_descriptors: 256,
        }
    }
}

/// The async runtime.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct RuntimeSpec {
    /// Worker threads; 0 means one per core; at most [`MAX_WORKER_THREADS`].
    pub worker_threads: usize,
    /// How the node's log lines are written (to standard error).
    pub log_format: LogFormat,
    /// On SIGTERM, how long connections in progress may go on (new ones are refused) before
    /// the node ends them and exits; at most [`MAX_DRAIN_SECS`].
    pub drain_secs: u64,
}

/// The longest drain a node accepts (a service manager's stop timeout must exceed it).
pub const MAX_DRAIN_SECS: u64 = 3600;

impl Default for RuntimeSpec {
    fn default() -> Self {
        RuntimeSpec {
            worker_threads: 0,
            log_format: LogFormat::default(),
            drain_secs: 15,
        }
    }
}

/// The shape of the node's log lines.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (journald, a terminal).
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `fields.message`, `target`, span
    /// fields), for log shippers.
    Json,
}

/// A node's configuration after validation, with paths resolved against the file's folder.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The node's name in the registry.
    pub node_name: String,
    /// The registry file (with a store: the last applied one, in its state folder).
    pub registry_path: PathBuf,
    /// The policy file (with a store: the last applied one, in its state folder).
    pub policy_path: PathBuf,
    /// The central store the registry and policy come from; none: the files above, as
    /// their authors write them.
    pub store: Option<StoreSpec>,
    /// Capture settings.
    pub capture: CaptureSpec,
    /// Admin endpoint.
    pub admin: AdminSpec,
    /// The metrics and probes listener, if any.
    pub metrics: Option<MetricsSpec>,
    /// Flow log.
    pub flow_log: FlowLogSpec,
    /// Runtime.
    pub runtime: RuntimeSpec,
    /// Workload certificates (paths resolved); none disables the tunnel.
    pub identity: Option<IdentitySpec>,
    /// Users' groups (paths resolved against `base_dir` when the directory is built).
    pub directory: Option<DirectorySpec>,
    /// The folder of the config file, which relative paths are resolved against.
    pub base_dir: PathBuf,
    /// The tunnel.
    pub tunnel: TunnelSpec,
    /// L7 inspection.
    pub l7: L7Spec,
    /// UDP sessions.
    pub udp: UdpSpec,
    /// IDS rules (paths relative to `base_dir`); none: no inspection.
    pub ids: Option<IdsSpec>,
    /// Connection budgets.
    pub limits: LimitsSpec,
    /// Where flow records are sent besides the local log (paths resolved); none: nowhere.
    pub export: Option<ExportSpec>,
    /// Risky but legal settings, with their location (printed at start and by `policy
    /// check`).
    pub warnings: Vec<Diagnostic>,
    /// The file it was read from.
    pub file: PathBuf,
    /// The sections this node took from the central store's node configuration
    /// ([`NodeConfig::with_defaults`]); empty: none.
    pub defaults: serde_json::Map<String, serde_json::Value>,
}

/// The host's name, as a node name (what `nodeName` defaults to); why not, when it cannot be.
pub fn host_name() -> Result<String, String> {
    let name = nix::unistd::gethostname()
        .map_err(|e| format!("the host name cannot be read ({e})"))?
        .into_string()
        .map_err(|_| "the host name is not UTF-8".to_owned())?;
    if eastwall_policy::is_valid_name(&name) {
        Ok(name)
    } else {
        Err(format!("the host name `{name}` is not a valid node name"))
    }
}

impl NodeConfig {
    /// Parses a node configuration; `file` names it in error messages and its folder anchors
    /// relative paths.
    /// Reads a node config; `nodeName` defaults to the host's name ([`host_name`]).
    pub fn parse(file: &Path, text: &str) -> Result<NodeConfig, Diagnostics> {
        let name = file.display().to_string();
        let f: File = eastwall_policy::parse_yaml(&name, text)?;
        let mut diags = Diagnostics::default();
        let mut error = |at: &Location, message: String| {
            diags.push(Diagnostic {
                file: name.clone(),
                line: at.line() as u32,
                col: at.column() as u32,
                severity: Severity::Error,
                message,
            })
        };
        if f.api_version.value != API_VERSION {
            error(
                &f.api_version.referenced,
                format!(
                    "apiVersion must be `{API_VERSION}`, found `{}`",
                    f.api_version.value
                ),
            );
        }
        if f.kind.value != "NodeConfig" {
            error(
                &f.kind.referenced,
                format!("kind must be `NodeConfig`, found `{}`", f.kind.value),
            );
        }
        let _ = f.metadata;
        // Without `nodeName`, the host's name: one file serves every host.
        let node_name = match &f.spec.node_name {
            Some(n) => {
                if !eastwall_policy::is_valid_name(&n.value) {
                    error(
                        &n.referenced,
                        format!(
                            "invalid nodeName `{}`: use 1-253 letters, digits, `-`, `.`, `_`, starting and ending with a letter or digit",
                            n.value
                        ),
                    );
                }
                n.value.clone()
            }
            None => host_name().unwrap_or_else(|why| {
                error(
                    &f.api_version.referenced,
                    format!("`spec.nodeName` is not set, and {why}: set it"),
                );
                String::new()
            }),
        };
        let mut warnings = Vec::new();
        let mut warn = |at: &Location, fallback: &Location, message: String| {
            let at = if at.line() == 0 { fallback } else { at };
            warnings.push(Diagnostic {
                file: name.clone(),
                line: at.line() as u32,
                col: at.column() as u32,
                severity: Severity::Warning,
                message,
            });
        };
        let top = f.kind.referenced;
        let c = &f.spec.capture;
        if c.value.interfaces.is_empty() {
            warn(
                &c.referenced,
                &top,
                "capture: no `interfaces`: no workload's outgoing traffic is captured (nor decided)"
                    .to_string(),
            );
        }
        let admin = &f.spec.admin;
        if !admin.value.listen.ip().is_loopback() && admin.value.token_file.is_none() {
            error(
                if admin.referenced.line() == 0 {
                    &top
                } else {
                    &admin.referenced
                },
                format!(
                    "admin: `listen: {}` is off loopback without `tokenFile`: the admin endpoint serves the flows; set `tokenFile` (a bearer token every request must carry), or keep it on loopback and let Prometheus scrape `metrics.listen`",
                    admin.value.listen
                ),
            );
        }
        let rt = &f.spec.runtime;
        if rt.value.worker_threads > MAX_WORKER_THREADS {
            error(
                if rt.referenced.line() == 0 {
                    &top
                } else {
                    &rt.referenced
                },
                format!(
                    "runtime: `workerThreads` must be at most {MAX_WORKER_THREADS} (0: one per core), found {}",
                    rt.value.worker_threads
                ),
            );
        }
        if rt.value.drain_secs > MAX_DRAIN_SECS {
            error(
                if rt.referenced.line() == 0 {
                    &top
                } else {
                    &rt.referenced
                },
                format!(
                    "runtime: `drainSecs` must be at most {MAX_DRAIN_SECS}, found {}",
                    rt.value.drain_secs
                ),
            );
        }
        if c.value.outbound_port == 0
            || c.value.inbound_port == 0
            || c.value.outbound_port == c.value.inbound_port
        {
            error(
                &c.referenced,
                "capture ports must be non-zero and distinct".to_string(),
            );
        }
        if f.spec.l7.max_header_bytes < 8192 || f.spec.l7.header_timeout_secs == 0 {
            error(
                &f.spec.capture.referenced,
                "l7: `maxHeaderBytes` must be at least 8192 and `headerTimeoutSecs` non-zero"
                    .to_string(),
            );
        }
        let u = &f.spec.udp.value;
        if u.idle_secs == 0
            || u.dns_idle_secs == 0
            || u.max_sessions == 0
            || u.max_sessions_per_source == 0
        {
            error(
                &f.spec.udp.referenced,
                "udp: `idleSecs`, `dnsIdleSecs`, `maxSessions` and `maxSessionsPerSource` must be non-zero"
                    .to_string(),
            );
        }
        let l = &f.spec.limits;
        if l.value.reserved_descriptors < MIN_RESERVED_DESCRIPTORS {
            error(
                if l.referenced.line() == 0 {
                    &top
                } else {
                    &l.referenced
                },
                format!(
                    "limits: `reservedDescriptors` must be at least {MIN_RESERVED_DESCRIPTORS}, found {}",
                    l.value.reserved_descriptors
                ),
            );
        }
        if f.spec.flow_log.max_bytes < 4096 {
            error(
                &top,
                "flowLog: `maxBytes` must be at least 4096".to_string(),
            );
        }
        let t = &f.spec.tunnel;
        if t.value.port == 0 || t.value.streams_per_connection == 0 {
            error(
                &t.referenced,
                "tunnel: `port` and `streamsPerConnection` must be non-zero".to_string(),
            );
        }
        if c.value.packet_queue == u16::MAX {
            error(
                &c.referenced,
                "capture: `packetQueue` takes two numbers (it and the next), below 65535"
                    .to_string(),
            );
        }
        if c.value.mark == 0 || c.value.own_mark == 0 || c.value.mark == c.value.own_mark {
            error(
                &c.referenced,
                "capture marks must be non-zero and distinct".to_string(),
            );
        }
        let base = file.parent().unwrap_or(Path::new("."));
        let (registry_path, policy_path, store) = match (
            f.spec.registry,
            f.spec.policy,
            f.spec.store,
        ) {
            (Some(r), Some(p), None) => (base.join(r), base.join(p), None),
            (None, None, Some(st)) => {
                let at = st.referenced;
                let st = st.value;
                if st.endpoints.is_empty() {
                    error(
                        &at,
                        "store: give at least one of the etcd members in `endpoints`".to_string(),
                    );
                }
                for e in &st.endpoints {
                    if !e.starts_with("https://") {
                        error(
                            &at,
                            format!(
                                "store: endpoint `{e}` must be https:// (the store is reached with TLS client certificates)"
                            ),
                        );
                    }
                }
                let state_dir = base.join(&st.state_dir);
                (
                    state_dir.join("registry.yaml"),
                    state_dir.join("policy.yaml"),
                    Some(StoreSpec {
                        store: eastwall_store::StoreSpec {
                            endpoints: st.endpoints,
                            ca_file: base.join(st.ca_file),
                            cert_file: base.join(st.cert_file),
                            key_file: base.join(st.key_file),
                            prefix: st.prefix,
                        },
                        state_dir,
                    }),
                )
            }
            (_, _, Some(st)) => {
                error(&st.referenced, "give either `store` (the central store) or `registry` and `policy` (files), not both".to_string());
                (PathBuf::new(), PathBuf::new(), None)
            }
            _ => {
                error(
                    &top,
                    "give `registry` and `policy` (files), or `store` (the central store)"
                        .to_string(),
                );
                (PathBuf::new(), PathBuf::new(), None)
            }
        };
        let identity = match f.spec.identity {
            None => None,
            Some(doc) => {
                let at = doc.referenced;
                let i = doc.value;
                let source = match (i.cert_dir, i.ca) {
                    (Some(cert_dir), None) => Some(CertSource::Files {
                        cert_dir: base.join(cert_dir),
                        reload_secs: i.reload_secs.unwrap_or_else(default_reload_secs).max(1),
                    }),
                    (None, Some(_)) if i.reload_secs.is_some() => {
                        error(
                            &at,
                            "identity: `reloadSecs` applies to `certDir` only, not to `ca`"
                                .to_string(),
                        );
                        None
                    }
                    (None, Some(ca)) if ca.cert_secs == Some(0) => {
                        error(
                            &at,
                            "identity.ca: `certSecs` must be at least 1".to_string(),
                        );
                        None
                    }
                    (None, Some(ca)) => Some(CertSource::Ca(CaClientSpec {
                        url: ca.url,
                        node_cert: base.join(ca.node_cert),
                        node_key: base.join(ca.node_key),
                        cert_secs: ca.cert_secs,
                        bootstrap_token: ca.bootstrap_token.map(|p| base.join(p)),
                    })),
                    (Some(_), Some(_)) => {
                        error(
                            &at,
                            "identity: give either `certDir` (certificate files) or `ca` (the eastwall CA), not both"
                                .to_string(),
                        );
                        None
                    }
                    (None, None) => {
                        error(
                            &at,
                            "identity: give `certDir` (certificate files) or `ca` (the eastwall CA)"
                                .to_string(),
                        );
                        None
                    }
                };
                source.map(|source| IdentitySpec {
                    trust_bundle: base.join(i.trust_bundle),
                    source,
                })
            }
        };
        let export = match f.spec.export {
            None => None,
            Some(e) => {
                let at = e.referenced;
                let e = e.value;
                if !e.url.starts_with("https://") {
                    error(
                        &at,
                        format!(
                            "export: `url` {} must be https:// (the collector is reached with the node's certificate)",
                            e.url
                        ),
                    );
                }
                if identity.is_none() {
                    error(
                        &at,
                        "export: needs `identity` (its trust bundle proves the collector)"
                            .to_owned(),
                    );
                }
                if e.backlog_records == 0 {
                    error(
                        &at,
                        "export: `backlogRecords` must be at least 1".to_owned(),
                    );
                }
                Some(ExportSpec {
                    node_cert: base.join(e.node_cert),
                    node_key: base.join(e.node_key),
                    ..e
                })
            }
        };
        if !diags.is_empty() {
            return Err(diags);
        }
        // On the store, the IDS rule sets it holds are rules of this node too (written to
        // the state folder), after any the file names.
        let ids = match (&store, f.spec.ids) {
            (Some(st), ids) => {
                let mut ids = ids.unwrap_or(IdsSpec {
                    rules: Vec::new(),
                    classification: None,
                    vars: BTreeMap::new(),
                });
                ids.rules.push(st.rules_dir());
                Some(ids)
            }
            (None, ids) => ids,
        };
        Ok(NodeConfig {
            node_name,
            registry_path,
            policy_path,
            store,
            capture: f.spec.capture.value,
            admin: AdminSpec {
                token_file: f.spec.admin.value.token_file.map(|p| base.join(p)),
                ..f.spec.admin.value
            },
            metrics: f.spec.metrics,
            flow_log: FlowLogSpec {
                path: f.spec.flow_log.path.map(|p| base.join(p)),
                ..f.spec.flow_log
            },
            runtime: f.spec.runtime.value,
            identity,
            tunnel: f.spec.tunnel.value,
            directory: f.spec.directory,
            l7: f.spec.l7,
            udp: f.spec.udp.value,
            ids,
            limits: f.spec.limits.value,
            export,
            base_dir: base.to_path_buf(),
            warnings,
            file: file.to_path_buf(),
            defaults: serde_json::Map::new(),
        })
    }

    /// The configuration of `file` (its `text`) with the sections of `defaults` (the central
    /// store's node configuration for this node) that the file does not set itself: a
    /// section the file sets wins, whole. Problems of the file alone are told with
    /// `FILE:LINE:COL`; problems the defaults bring, against `label` (where they come from).
    pub fn with_defaults(
        file: &Path,
        text: &str,
        defaults: &serde_json::Map<String, serde_json::Value>,
        label: &str,
    ) -> Result<NodeConfig, Diagnostics> {
        let own = NodeConfig::parse(file, text)?;
        if defaults.is_empty() {
            return Ok(own);
        }
        let mut doc: serde_json::Value =
            eastwall_policy::parse_yaml(&file.display().to_string(), text)?;
        let Some(spec) = doc.get_mut("spec").and_then(|s| s.as_object_mut()) else {
            return Ok(own);
        };
        let mut taken = serde_json::Map::new();
        for (k, v) in defaults {
            if !spec.contains_key(k) {
                spec.insert(k.clone(), v.clone());
                taken.insert(k.clone(), v.clone());
            }
        }
        let merged = serde_json::to_string(&doc).unwrap_or_default();
        let relabel = |d: Diagnostic| Diagnostic {
            file: format!("{} with {label}", file.display()),
            line: 0,
            col: 0,
            ..d
        };
        let mut cfg = NodeConfig::parse(file, &merged).map_err(|d| {
            d.into_vec()
                .into_iter()
                .map(relabel)
                .collect::<Diagnostics>()
        })?;
        // The file's own warnings keep their lines; the defaults' are told against the label.
        let theirs: Vec<Diagnostic> = cfg
            .warnings
            .drain(..)
            .filter(|w| !own.warnings.iter().any(|o| o.message == w.message))
            .map(relabel)
            .collect();
        cfg.warnings = own.warnings;
        cfg.warnings.extend(theirs);
        cfg.defaults = taken;
        Ok(cfg)
    }

    /// Reads and parses a node configuration file.
    pub fn load(path: &Path) -> anyhow::Result<NodeConfig> {
        let text = read_file(path)?;
        NodeConfig::parse(path, &text).map_err(|d| anyhow::anyhow!("{d}"))
    }
}

/// Node configuration sections from the central store (`kind: NodeDefaults`), for every node
/// or (with `metadata.node`) for one. What a node's own file does not set, it takes from
/// these: the node's document first, then the one for every node.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DefaultsFile {
    api_version: Spanned<String>,
    kind: Spanned<String>,
    #[serde(default)]
    metadata: Option<DefaultsMetadata>,
    // Read for its checks (types, unknown fields, with locations); the sections are taken as
    // written.
    #[allow(dead_code)]
    spec: DefaultsSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DefaultsMetadata {
    #[serde(default)]
    node: Option<String>,
    #[allow(dead_code)]
    #[serde(default)]
    name: Option<String>,
}

/// The sections a node takes from the store: none that names files, addresses or
/// credentials on the node (those stay in its own file: writing to the store must not be
/// writing to any file of every node as root).
#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DefaultsSpec {
    capture: Option<CaptureSpec>,
    flow_log: Option<FlowLogDefaults>,
    runtime: Option<RuntimeSpec>,
    tunnel: Option<TunnelSpec>,
    l7: Option<L7Spec>,
    udp: Option<UdpSpec>,
    limits: Option<LimitsSpec>,
}

/// `flowLog` from the store: its sizes, not its file.
#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FlowLogDefaults {
    recent: Option<usize>,
    max_bytes: Option<u64>,
    keep: Option<u32>,
}

/// Checks a `kind: NodeDefaults` document as `eastwall apply` does before writing it: its
/// shape with `FILE:LINE:COL`, then its sections as a node would take them (over a node
/// configuration that sets nothing else). Returns the node it is for (`None`: every node).
pub fn check_defaults(file: &str, text: &str) -> Result<Option<String>, Diagnostics> {
    let f: DefaultsFile = eastwall_policy::parse_yaml(file, text)?;
    let mut diags = Diagnostics::default();
    let mut error = |at: &Location, message: String| {
        diags.push(Diagnostic {
            file: file.to_owned(),
            line: at.line() as u32,
            col: at.column() as u32,
            severity: Severity::Error,
            message,
        })
    };
    if f.api_version.value != API_VERSION {
        error(
            &f.api_version.referenced,
            format!(
                "apiVersion must be `{API_VERSION}`, found `{}`",
                f.api_version.value
            ),
        );
    }
    if f.kind.value != "NodeDefaults" {
        error(
            &f.kind.referenced,
            format!("kind must be `NodeDefaults`, found `{}`", f.kind.value),
        );
    }
    if !diags.is_empty() {
        return Err(diags);
    }
    let doc: serde_json::Value = eastwall_policy::parse_yaml(file, text)?;
    let spec = doc
        .get("spec")
        .and_then(|s| s.as_object())
        .cloned()
        .unwrap_or_default();
    let bare = "apiVersion: eastwall.dev/v1\nkind: NodeConfig\nspec:\n  nodeName: check\n  store: {endpoints: [\"https://127.0.0.1:2379\"], caFile: ca.pem, certFile: node.crt, keyFile: node.key}\n";
    NodeConfig::with_defaults(Path::new(file), bare, &spec, "these defaults").map_err(|d| {
        d.into_vec()
            .into_iter()
            .map(|x| Diagnostic {
                file: file.to_owned(),
                ..x
            })
            .collect::<Diagnostics>()
    })?;
    Ok(f.metadata.and_then(|m| m.node))
}

/// Largest registry, policy, directory or node config file the node reads.
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// Reads a file the node is configured with: a regular file (not a FIFO, device or
/// folder, which could block or never end), opened without blocking, at most
/// [`MAX_FILE_BYTES`], UTF-8.
pub fn read_file(path: &Path) -> anyhow::Result<String> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let shown = path.display();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(|e| anyhow::anyhow!("{shown}: cannot read: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| anyhow::anyhow!("{shown}: cannot read: {e}"))?;
    if !meta.is_file() {
        anyhow::bail!("{shown} is not a regular file");
    }
    if meta.len() > MAX_FILE_BYTES {
        anyhow::bail!(
            "{shown} is larger than {} MiB ({} bytes)",
            MAX_FILE_BYTES >> 20,
            meta.len()
        );
    }
    let mut text = String::with_capacity(meta.len() as usize);
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| anyhow::anyhow!("{shown}: cannot read: {e}"))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        anyhow::bail!("{shown} grew past {} MiB while read", MAX_FILE_BYTES >> 20);
    }
    Ok(text)
}

/// Which transport carries a node's outgoing tunnel streams (`tunnel.transport`). A node
/// always accepts both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportMode {
    /// QUIC only.
    Quic,
    /// HTTP/2 over TLS over TCP only.
    H2,
    /// Per destination node: see [`Tunnel::open`].
    #[default]
    Auto,
}

impl TransportMode {
    /// The name of the mode, as flow records give the transport when none could be opened.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportMode::Quic => "quic",
            TransportMode::H2 => "h2",
            TransportMode::Auto => "auto",
        }
    }
}

/// The `directory` section of the node config.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DirectorySpec {
    /// A static directory file (`kind: Directory`).
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// An LDAP or Active Directory server.
    #[serde(default)]
    pub ldap: Option<LdapSpec>,
    /// Seconds an answer is served before the directory is asked again.
    #[serde(default = "default_refresh")]
    pub refresh_secs: u64,
    /// Seconds past the refresh that the last answer is still served while the directory fails.
    #[serde(default = "default_grace")]
    pub grace_secs: u64,
    /// Milliseconds a connection may wait for a user's groups.
    #[serde(default = "default_lookup_ms")]
    pub lookup_timeout_ms: u64,
}

fn default_refresh() -> u64 {
    60
}
fn default_grace() -> u64 {
    600
}
fn default_lookup_ms() -> u64 {
    2000
}

/// An LDAP directory.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LdapSpec {
    /// `ldap://host:port` or `ldaps://host:port`.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS.
    #[serde(default)]
    pub starttls: bool,
    /// CA certificate(s) the server must chain to.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate (labs only; logged).
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// The service account.
    #[serde(default)]
    pub bind_dn: Option<String>,
    /// File with the service account's password.
    #[serde(default)]
    pub bind_password_file: Option<PathBuf>,
    /// Where users are searched.
    pub user_base: String,
    /// `(uid={user})` (OpenLDAP) or `(sAMAccountName={user})` (Active Directory).
    #[serde(default = "default_user_filter")]
    pub user_filter: String,
    /// `memberOf` (attribute on the user), `member` / `uniqueMember` (group search by DN),
    /// or `memberUid` (posixGroup search by name).
    #[serde(default = "default_membership")]
    pub membership: String,
    /// Where groups are searched (for the search modes).
    #[serde(default)]
    pub group_base: Option<String>,
    /// Levels of nested groups followed by the client (0: none).
    #[serde(default)]
    pub nesting_depth: u32,
    /// Use Active Directory's in-chain rule for nesting (with `member`).
    #[serde(default)]
    pub in_chain: bool,
}

fn default_user_filter() -> String {
    "(uid={user})".into()
}
fn default_membership() -> String {
    "memberOf".into()
}

/// The `export` section: the flow collector this node sends its records to.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExportSpec {
    /// `https://HOST:PORT` of `eastwall collector`.
    pub url: String,
    /// The node certificate it presents (`spiffe://<td>/node/<nodeName>`), re-read for
    /// every batch so it can be renewed in place.
    pub node_cert: PathBuf,
    /// Its key.
    pub node_key: PathBuf,
    /// Records kept while the collector cannot take them; beyond, new ones are dropped (and
    /// counted).
    #[serde(default = "default_backlog")]
    pub backlog_records: usize,
}

fn default_backlog() -> usize {
    100_000
}

/// The `ids` section of the node config.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IdsSpec {
    /// Rules files (Suricata syntax), or folders whose `*.rules` files are read.
    pub rules: Vec<PathBuf>,
    /// `classification.config` (classtype descriptions and priorities); Suricata's defaults
    /// without it.
    #[serde(default)]
    pub classification: Option<PathBuf>,
    /// Address and port variables over the east-west defaults (`HOME_NET` and
    /// `EXTERNAL_NET` are `any`: both ends of east-west traffic are inside).
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const OWN: &str = "apiVersion: eastwall.dev/v1
kind: NodeConfig
spec:
  nodeName: hostA
  store: {endpoints: [\"https://10.0.0.5:2379\"], caFile: ca.pem, certFile: n.crt, keyFile: n.key}
  l7: {firstBytesMs: 500}
";

    fn sections(yaml: &str) -> serde_json::Map<String, serde_json::Value> {
        serde_json::from_str(yaml).unwrap()
    }

    /// One config for every host: without `nodeName` the node is named after its host; a
    /// name the registry could not hold is refused with its place.
    #[test]
    fn the_node_name_defaults_to_the_host_name() {
        let file = Path::new("node.yaml");
        let without = OWN.replace("  nodeName: hostA\n", "");
        assert!(!without.contains("nodeName"));
        match host_name() {
            Ok(host) => {
                assert_eq!(NodeConfig::parse(file, &without).unwrap().node_name, host);
                let raw = nix::unistd::gethostname().unwrap();
                assert_eq!(raw.to_str(), Some(host.as_str()));
            }
            // A host whose name cannot be a node name: the file must say.
            Err(why) => {
                let e = NodeConfig::parse(file, &without).unwrap_err().to_string();
                assert!(e.contains(&why) && e.contains("nodeName"), "{e}");
            }
        }
        assert_eq!(NodeConfig::parse(file, OWN).unwrap().node_name, "hostA");
        let bad = OWN.replace("nodeName: hostA", "nodeName: \"-a b\"");
        let e = NodeConfig::parse(file, &bad).unwrap_err().to_string();
        assert!(e.contains("node.yaml:4:13: invalid nodeName `-a b`"), "{e}");
    }

    #[test]
    fn an_admin_endpoint_off_loopback_needs_a_token() {
        let file = Path::new("/etc/eastwall/node.yaml");
        let with = |extra: &str| format!("{OWN}{extra}");
        let e = NodeConfig::parse(file, &with("  admin: {listen: \"0.0.0.0:15000\"}\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "node.yaml:7:10: admin: `listen: 0.0.0.0:15000` is off loopback without `tokenFile`"
            ),
            "{e}"
        );
        let c = NodeConfig::parse(
            file,
            &with("  admin: {listen: \"0.0.0.0:15000\", tokenFile: admin.token}\n  metrics: {listen: \"0.0.0.0:15020\"}\n"),
        )
        .unwrap();
        assert_eq!(
            c.admin.token_file.as_deref(),
            Some(Path::new("/etc/eastwall/admin.token"))
        );
        assert_eq!(
            c.metrics.map(|m| m.listen),
            Some("0.0.0.0:15020".parse().unwrap())
        );
        // On loopback a token is optional.
        let c = NodeConfig::parse(file, OWN).unwrap();
        assert_eq!((c.admin.token_file, c.metrics), (None, None));
        let e = NodeConfig::parse(
            file,
            &with("  metrics: {listen: \"0.0.0.0:15020\", flows: true}\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("node.yaml:7:"), "{e}");
    }

    #[test]
    fn the_log_format_is_text_or_json() {
        let file = Path::new("node.yaml");
        assert_eq!(
            NodeConfig::parse(file, OWN).unwrap().runtime.log_format,
            LogFormat::Text
        );
        let json = format!("{OWN}  runtime: {{logFormat: json}}\n");
        let cfg = NodeConfig::parse(file, &json).unwrap();
        assert_eq!(cfg.runtime.log_format, LogFormat::Json);
        let bad = format!("{OWN}  runtime: {{logFormat: xml}}\n");
        let e = NodeConfig::parse(file, &bad).unwrap_err().to_string();
        assert!(e.contains("node.yaml:7:") && e.contains("xml"), "{e}");
    }

    /// The example a platform team starts from (`deploy/node.yaml`) is a valid config.
    #[test]
    fn the_deployed_example_is_valid() {
        let text = include_str!("../../deploy/node.yaml");
        if let Err(e) = NodeConfig::parse(Path::new("deploy/node.yaml"), text) {
            panic!("{e}");
        }
    }

    /// The Kubernetes ConfigMap's node configuration, registry and policy are valid, and
    /// the node drains within the DaemonSet's grace period.
    #[test]
    fn the_kubernetes_configuration_is_valid() {
        #[derive(Deserialize)]
        struct ConfigMap {
            data: std::collections::BTreeMap<String, String>,
        }
        let name = "deploy/kubernetes/node-config.yaml";
        let map: ConfigMap = eastwall_policy::parse_yaml(
            name,
            include_str!("../../deploy/kubernetes/node-config.yaml"),
        )
        .unwrap();
        let cfg = NodeConfig::parse(Path::new("/etc/eastwall/node.yaml"), &map.data["node.yaml"])
            .unwrap_or_else(|e| panic!("{e}"));
        let registry =
            eastwall_policy::Registry::parse("registry.yaml", &map.data["registry.yaml"]).unwrap();
        eastwall_policy::Policy::parse("policy.yaml", &map.data["policy.yaml"], &registry).unwrap();
        let daemonset = include_str!("../../deploy/kubernetes/node-daemonset.yaml");
        let grace: u64 = daemonset
            .lines()
            .find_map(|l| l.trim().strip_prefix("terminationGracePeriodSeconds: "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(cfg.runtime.drain_secs + 10 <= grace, "{grace}");
        assert_eq!(
            cfg.metrics.map(|m| m.listen.port()),
            Some(15020),
            "the probes' port"
        );
    }

    #[test]
    fn defaults_fill_what_the_file_does_not_set() {
        let file = Path::new("/etc/eastwall/node.yaml");
        let d = sections(
            r#"{"l7": {"firstBytesMs": 9000}, "limits": {"reservedDescriptors": 512}, "udp": {"idleSecs": 7}}"#,
        );
        let cfg = NodeConfig::with_defaults(file, OWN, &d, "the store").unwrap();
        // The file's own section wins, whole; the others come from the store.
        assert_eq!(cfg.l7.first_bytes_ms, 500);
        assert_eq!(cfg.limits.reserved_descriptors, 512);
        assert_eq!(cfg.udp.idle_secs, 7);
        let taken: Vec<&String> = cfg.defaults.keys().collect();
        assert_eq!(taken, ["limits", "udp"]);
        // None: the file alone.
        let cfg = NodeConfig::with_defaults(file, OWN, &Default::default(), "x").unwrap();
        assert!(cfg.defaults.is_empty());
    }

    #[test]
    fn defaults_that_do_not_fit_are_told_against_where_they_come_from() {
        let file = Path::new("node.yaml");
        let d = sections(r#"{"runtime": {"workerThreads": 9999}}"#);
        let e = NodeConfig::with_defaults(
            file,
            OWN,
            &d,
            "etcd:/eastwall/config/node-config (version 3)",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("node.yaml with etcd:/eastwall/config/node-config (version 3)"),
            "{e}"
        );
        assert!(e.contains("workerThreads"), "{e}");
        // The file's own problems keep their lines.
        let bad = OWN.replace("firstBytesMs: 500", "firstBytes: 500");
        let e = NodeConfig::with_defaults(file, &bad, &d, "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("node.yaml:6:"), "{e}");
    }

    #[test]
    fn defaults_documents_are_checked_with_locations() {
        let doc = "apiVersion: eastwall.dev/v1
kind: NodeDefaults
metadata: {node: hostA}
spec:
  limits: {reservedDescriptors: 512}
";
        assert_eq!(
            check_defaults("d.yaml", doc).unwrap().as_deref(),
            Some("hostA")
        );
        let every = doc.replace("metadata: {node: hostA}\n", "");
        assert_eq!(check_defaults("d.yaml", &every).unwrap(), None);
        // What only a node's own file may say: what makes it a node of the store, and what
        // names files, addresses or credentials on it.
        for (extra, what) in [
            ("  store: {}\n", "store"),
            ("  admin: {listen: \"0.0.0.0:15000\"}\n", "admin"),
            ("  metrics: {listen: \"0.0.0.0:15020\"}\n", "metrics"),
            ("  ids: {rules: [/etc/passwd]}\n", "ids"),
            ("  flowLog: {path: /etc/shadow}\n", "path"),
        ] {
            let e = check_defaults("d.yaml", &format!("{doc}{extra}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("d.yaml:6:") && e.contains(what), "{extra}: {e}");
        }
        check_defaults(
            "d.yaml",
            &format!("{doc}  flowLog: {{maxBytes: 1048576, keep: 2}}\n"),
        )
        .unwrap();
        // A typo inside a section, and a value a node refuses.
        let e = check_defaults("d.yaml", &doc.replace("reservedDescriptors", "reserved"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("d.yaml:5:"), "{e}");
        let e = check_defaults("d.yaml", &doc.replace("512", "1"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("d.yaml") && e.contains("reservedDescriptors"),
            "{e}"
        );
        let e = check_defaults("d.yaml", &doc.replace("NodeDefaults", "NodeConfig"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("kind must be `NodeDefaults`"), "{e}");
    }
}
