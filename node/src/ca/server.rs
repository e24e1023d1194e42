//! `eastwall ca serve`: the CA's signing endpoint.
//!
//! HTTPS (HTTP/1.1 over TLS 1.3): the CA presents a certificate for `spiffe://<td>/ca` that it
//! issues itself (and renews at half its lifetime); a client certificate, when sent, must
//! chain to its own CA certificate, and every path but `/v1/enroll` requires one.
//!
//! `POST /v1/sign` with a PEM certificate signing request as the body:
//! - the client must be a node: `spiffe://<td>/node/<name>` with `<name>` a node of the
//!   registry, else 403;
//! - the body must be a CSR (at most [`MAX_BODY`] bytes, else 413) asking for exactly one
//!   SPIFFE ID of the trust domain, else 400;
//! - that ID must be the identity of a workload the registry places on that node, else 403;
//! - then 200 with the signed certificate (PEM), valid for `--cert-secs`, or for `N` seconds
//!   if the query asks `certSecs=N` with `N` smaller.
//!
//! `POST /v1/enroll` with `Authorization: Bearer <bootstrap token>` and a request for a node
//! identity (`spiffe://<td>/node/<name>`), from a client without a certificate (a new node):
//! - the request must ask for the identity of a node of the registry, else 400 or 403;
//! - the token must be one `eastwall ca token` made, not expired, with a use left, for that
//!   node (or any), else 401 (the reason goes to the log only);
//! - then 200 with the node certificate, valid for `--node-cert-secs`; the use is spent.
//!
//! The registry comes from a file, re-read when it changes (checked on every request), or
//! from the central store, followed version by version (the registry of the version in
//! force, validated like the nodes validate it). Either way, moving a workload to another
//! node moves the right to its certificate with it. Every decision is logged.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use arc_swap::ArcSwap;
use bytes::Bytes;
use eastwall_certs::{Ca, Identity, RotatingIdentity, TrustBundle};
use eastwall_identity::SpiffeId;
use eastwall_policy::Registry;
use eastwall_store::follow::{Latest, latest};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{debug, info, warn};

use super::{ca_server_id, load_ca};

/// Largest request body accepted (a CSR is well under 1 KiB).
pub const MAX_BODY: usize = 64 * 1024;
/// The signing path.
pub const SIGN_PATH: &str = "/v1/sign";
/// The enrollment path (a new node's certificate, for a bootstrap token).
pub const ENROLL_PATH: &str = "/v1/enroll";
/// The ALPN protocol of the endpoint.
pub const ALPN: &[u8] = crate::mtls::ALPN;
/// Lifetime of the CA service's own certificate (renewed at half of it).
const SERVER_CERT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest a connection may live (a signing client needs well under a second).
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections served at once; more wait in the accept queue.
const MAX_CONNECTIONS: usize = 256;

/// What `eastwall ca serve` was asked to do.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The CA folder (`ca.crt`, `ca.key`).
    pub dir: PathBuf,
    /// Where the registry deciding which node may hold which identity comes from.
    pub registry: RegistrySource,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Lifetime of the certificates it signs.
    pub cert_ttl: Duration,
    /// Lifetime of the node certificates it gives enrolling nodes.
    pub node_cert_ttl: Duration,
}

/// Where the CA service reads the registry.
#[derive(Debug, Clone)]
pub enum RegistrySource {
    /// A file, re-read when it changes.
    File(PathBuf),
    /// The central store: the registry of the version in force, followed.
    Store(eastwall_store::StoreSpec),
}

/// How long the CA service waits for the store's registry at start.
const STORE_WAIT: Duration = Duration::from_secs(30);

/// Runs the CA service until SIGINT or SIGTERM.
pub fn run(opts: ServeOptions) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let server = Server::bind(&opts).await?;
        tokio::select! {
            r = server.serve() => r,
            _ = term.recv() => { info!("stopping"); Ok(()) },
            _ = int.recv() => { info!("stopping"); Ok(()) },
        }
    })
}

/// A bound CA service.
pub struct Server {
    listener: TcpListener,
    ctx: Arc<Ctx>,
    tls: tokio_rustls::TlsAcceptor,
    own: Arc<RotatingIdentity>,
}

struct Ctx {
    ca: Ca,
    /// The CA folder (its bootstrap tokens).
    dir: PathBuf,
    registry: Registries,
    cert_ttl: Duration,
    node_cert_ttl: Duration,
}

/// The registry in force, from where it comes.
enum Registries {
    File(RegistryFile),
    Store {
        spec: eastwall_store::StoreSpec,
        now: ArcSwap<Registry>,
    },
}

impl Registries {
    fn current(&self) -> Arc<Registry> {
        match self {
            Registries::File(f) => f.current(),
            Registries::Store { now, .. } => now.load_full(),
        }
    }
}

impl Server {
    /// Loads the CA and the registry, issues the service's own certificate and binds.
    pub async fn bind(opts: &ServeOptions) -> anyhow::Result<Server> {
        let ca = load_ca(&opts.dir)?;
        if opts.cert_ttl.is_zero() {
            anyhow::bail!("--cert-secs must be at least 1");
        }
        let (registry, source) = match &opts.registry {
            RegistrySource::File(path) => (
                Registries::File(RegistryFile::load(path)?),
                path.display().to_string(),
            ),
            RegistrySource::Store(spec) => {
                let (registry, have) = first_from_store(spec).await?;
                info!(version = have.0, "registry from the central store");
                let registries = Registries::Store {
                    spec: spec.clone(),
                    now: ArcSwap::from_pointee(registry),
                };
                (
                    registries,
                    format!("the store at {}", spec.endpoints.join(", ")),
                )
            }
        };
        let td = registry.current().trust_domain().to_owned();
        if td != ca.trust_domain() {
            anyhow::bail!(
                "the registry of {source} is for trust domain {td}, but the CA in {} is for {}",
                opts.dir.display(),
                ca.trust_domain()
            );
        }
        let bundle = TrustBundle::from_pem(ca.cert_pem()).map_err(|e| anyhow::anyhow!("{e}"))?;
        let own = RotatingIdentity::new(own_identity(&ca)?);
        // A client certificate is verified when sent; only enrollment does without one.
        let config =
            eastwall_certs::server_config_certificate_optional(own.clone(), &bundle, &[ALPN])
                .map_err(|e| anyhow::anyhow!("TLS configuration: {e}"))?;
        let listener = TcpListener::bind(opts.listen)
            .await
            .with_context(|| format!("listening on {}", opts.listen))?;
        info!(
            listen = %opts.listen,
            trust_domain = %ca.trust_domain(),
            cert_secs = opts.cert_ttl.as_secs(),
            registry = %source,
            "CA serving {SIGN_PATH}"
        );
        Ok(Server {
            listener,
            ctx: Arc::new(Ctx {
                ca,
                dir: opts.dir.clone(),
                registry,
                cert_ttl: opts.cert_ttl,
                node_cert_ttl: opts.node_cert_ttl,
            }),
            tls: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            own,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until the future is dropped.
    pub async fn serve(self) -> anyhow::Result<()> {
        tokio::spawn(renew_own(self.ctx.clone(), self.own.clone()));
        if let Registries::Store { spec, .. } = &self.ctx.registry {
            let (spec, ctx) = (spec.clone(), self.ctx.clone());
            tokio::spawn(async move {
                let syncer = CaSync {
                    ctx,
                    have: None,
                    base: None,
                };
                eastwall_store::follow::follow(&spec, "the registry in force stays", syncer).await;
            });
        }
        let ctx = self.ctx.clone();
        crate::mtls::serve(
            self.listener,
            self.tls,
            MAX_CONNECTIONS,
            CONNECTION_TIMEOUT,
            move |req, peer| {
                let ctx = ctx.clone();
                async move { handle(req, &ctx, &peer.identity, peer.addr).await }
            },
        )
        .await
    }
}

/// The service's own certificate: `spiffe://<td>/ca`, issued by itself.
fn own_identity(ca: &Ca) -> anyhow::Result<Identity> {
    let id = ca_server_id(ca.trust_domain())?;
    let issued = ca
        .issue(&id, SERVER_CERT_TTL)
        .map_err(|e| anyhow::anyhow!("issuing the CA service's certificate: {e}"))?;
    Identity::from_pem(&issued.cert_pem, &issued.key_pem).map_err(|e| anyhow::anyhow!("{e}"))
}

async fn renew_own(ctx: Arc<Ctx>, own: Arc<RotatingIdentity>) {
    let mut next = SystemTime::now() + SERVER_CERT_TTL / 2;
    loop {
        let wait = next
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        tokio::time::sleep(wait).await;
        match own_identity(&ctx.ca) {
            Ok(i) => {
                info!(not_after = ?i.not_after, "renewed the CA service's certificate");
                own.set(i);
                next = SystemTime::now() + SERVER_CERT_TTL / 2;
            }
            Err(e) => {
                warn!("{e:#}; retrying in 60 s");
                next = SystemTime::now() + Duration::from_secs(60);
            }
        }
    }
}

async fn handle(
    req: Request<Incoming>,
    ctx: &Ctx,
    peer: &Result<SpiffeId, String>,
    remote: SocketAddr,
) -> Response<Full<Bytes>> {
    if req.uri().path() == ENROLL_PATH && req.method() == Method::POST {
        return enroll(req, ctx, remote).await;
    }
    if req.uri().path() != SIGN_PATH {
        return text(
            StatusCode::NOT_FOUND,
            format!("not found: POST {SIGN_PATH}, POST {ENROLL_PATH}\n"),
        );
    }
    if req.method() != Method::POST {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{SIGN_PATH} takes POST with a PEM certificate request\n"),
        );
    }
    let peer = match peer {
        Ok(p) => p,
        Err(e) => {
            warn!(%remote, reason = %e, decision = "refused", "sign: client has no identity");
            return text(StatusCode::FORBIDDEN, format!("no client identity: {e}\n"));
        }
    };
    let req_query = req.uri().query().map(str::to_owned);
    let body = match read_body(req, remote, &peer.to_string()).await {
        Ok(b) => b,
        Err(refusal) => return refusal,
    };
    let ttl = match requested_ttl(req_query.as_deref(), ctx.cert_ttl) {
        Ok(t) => t,
        Err(m) => {
            warn!(%remote, client = %peer, decision = "refused", status = 400, "sign: {m}");
            return text(StatusCode::BAD_REQUEST, format!("{m}\n"));
        }
    };
    let registry = ctx.registry.current();
    let (status, message, cert) = decide(&ctx.ca, &registry, peer, &body, ttl);
    match status {
        StatusCode::OK => {
            info!(%remote, client = %peer, decision = "signed", "sign: {message}");
            text(StatusCode::OK, cert.unwrap_or_default())
        }
        _ => {
            warn!(%remote, client = %peer, decision = "refused", status = status.as_u16(), "sign: {message}");
            text(status, format!("{message}\n"))
        }
    }
}

/// The body of a request (at most [`MAX_BODY`] bytes), or the answer refusing it.
async fn read_body(
    req: Request<Incoming>,
    remote: SocketAddr,
    client: &str,
) -> Result<Bytes, Response<Full<Bytes>>> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            warn!(%remote, client, decision = "refused", "request body over {MAX_BODY} bytes");
            Err(text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is limited to {MAX_BODY} bytes\n"),
            ))
        }
        Err(e) => {
            debug!(%remote, %e, "reading the body");
            Err(text(
                StatusCode::BAD_REQUEST,
                format!("reading the body: {e}\n"),
            ))
        }
    }
}

/// `POST /v1/enroll`: a new node's certificate for a bootstrap token.
async fn enroll(req: Request<Incoming>, ctx: &Ctx, remote: SocketAddr) -> Response<Full<Bytes>> {
    let token = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned());
    let Some(token) = token else {
        warn!(%remote, decision = "refused", "enroll: no bootstrap token");
        return text(
            StatusCode::UNAUTHORIZED,
            "enrollment needs Authorization: Bearer <bootstrap token>\n".into(),
        );
    };
    let body = match read_body(req, remote, "enrolling node").await {
        Ok(b) => b,
        Err(refusal) => return refusal,
    };
    let registry = ctx.registry.current();
    let (node, cert) = match std::str::from_utf8(&body)
        .map_err(|_| "the body is not a PEM certificate request (not UTF-8)".to_owned())
        .and_then(|csr| {
            ctx.ca
                .sign_csr(csr, ctx.node_cert_ttl)
                .map_err(|e| format!("bad request: {e}"))
        }) {
        Ok((id, cert)) => match requesting_node(&registry, &id) {
            Ok(node) => (node, cert),
            Err(m) => {
                warn!(%remote, decision = "refused", status = 403, "enroll: {m}");
                return text(StatusCode::FORBIDDEN, format!("{m}\n"));
            }
        },
        Err(m) => {
            warn!(%remote, decision = "refused", status = 400, "enroll: {m}");
            return text(StatusCode::BAD_REQUEST, format!("{m}\n"));
        }
    };
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // The token is spent only for a request that would otherwise be signed.
    match super::token::with_tokens(&ctx.dir, |t| t.spend(&token, &node, now)) {
        Ok(Ok(())) => {
            info!(%remote, %node, decision = "signed", valid_secs = ctx.node_cert_ttl.as_secs(), "enroll: node certificate for a bootstrap token");
            text(StatusCode::OK, cert)
        }
        Ok(Err(refusal)) => {
            warn!(%remote, %node, decision = "refused", status = 401, "enroll: {}", refusal.as_str());
            text(StatusCode::UNAUTHORIZED, "bootstrap token refused\n".into())
        }
        Err(e) => {
            warn!(%remote, %node, "enroll: {e:#}");
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the CA cannot read its bootstrap tokens\n".into(),
            )
        }
    }
}

/// The lifetime to sign for: `certSecs=N` from the query if given (at least 1), at most the
/// CA's `--cert-secs`.
fn requested_ttl(query: Option<&str>, max: Duration) -> Result<Duration, String> {
    let Some(v) = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("certSecs="))
    else {
        return Ok(max);
    };
    match v.parse::<u64>() {
        Ok(n) if n >= 1 => Ok(Duration::from_secs(n).min(max)),
        _ => Err(format!(
            "certSecs must be a whole number of seconds >= 1, got {v:?}"
        )),
    }
}

/// The authorization decision for one request; returns the status, a message for the log (and
/// the body when refused), and the certificate when signed. Pure: no I/O.
fn decide(
    ca: &Ca,
    registry: &Registry,
    peer: &SpiffeId,
    body: &[u8],
    ttl: Duration,
) -> (StatusCode, String, Option<String>) {
    let node = match requesting_node(registry, peer) {
        Ok(n) => n,
        Err(m) => return (StatusCode::FORBIDDEN, m, None),
    };
    let Ok(csr) = std::str::from_utf8(body) else {
        return (
            StatusCode::BAD_REQUEST,
            "the body is not a PEM certificate request (not UTF-8)".into(),
            None,
        );
    };
    // sign_csr checks the request (self-signature, exactly one SPIFFE ID of the trust domain)
    // and yields the ID it asks for; the certificate is handed out only if the node may hold
    // that ID, and dropped otherwise.
    let (id, cert) = match ca.sign_csr(csr, ttl) {
        Ok(x) => x,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("bad request: {e}"), None),
    };
    // A workload's identity, or a local user's identity of a `localUsers` workload.
    if registry
        .workloads_owning(&id)
        .iter()
        .any(|w| w.node == node)
    {
        (
            StatusCode::OK,
            format!("signed {id} for node `{node}` (valid {} s)", ttl.as_secs()),
            Some(cert),
        )
    } else {
        (
            StatusCode::FORBIDDEN,
            format!(
                "node `{node}` may not obtain a certificate for {id}: the registry places no workload with that identity on it"
            ),
            None,
        )
    }
}

/// The node a client certificate proves, if it is `spiffe://<td>/node/<name>` of a node in the
/// registry.
fn requesting_node(registry: &Registry, peer: &SpiffeId) -> Result<String, String> {
    let name = peer
        .path()
        .strip_prefix("/node/")
        .filter(|n| !n.contains('/'))
        .ok_or_else(|| {
            format!("{peer} is not a node identity (spiffe://<trust domain>/node/<name>)")
        })?;
    match registry.node(name) {
        Some(n) if n.identity == *peer => Ok(name.to_owned()),
        _ => Err(format!(
            "{peer}: node `{name}` is not in the registry of trust domain {}",
            registry.trust_domain()
        )),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let ctype = if status == StatusCode::OK {
        "application/x-pem-file"
    } else {
        "text/plain; charset=utf-8"
    };
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(ctype),
    );
    r
}

/// The registry file, re-read when its modification time or size changes. A change that does
/// not load (or names another trust domain) is logged and the registry in force stays.
struct RegistryFile {
    path: PathBuf,
    state: Mutex<(Stamp, Arc<Registry>)>,
}

type Stamp = Option<(SystemTime, u64)>;

impl RegistryFile {
    fn load(path: &Path) -> anyhow::Result<RegistryFile> {
        let stamp = stamp(path);
        let registry = parse_registry(path)?;
        Ok(RegistryFile {
            path: path.to_owned(),
            state: Mutex::new((stamp, Arc::new(registry))),
        })
    }

    fn current(&self) -> Arc<Registry> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = stamp(&self.path);
        if now.is_some() && now != state.0 {
            state.0 = now;
            match parse_registry(&self.path) {
                Ok(r) if r.trust_domain() != state.1.trust_domain() => warn!(
                    registry = %self.path.display(),
                    "the changed registry is for trust domain {}, not {}; keeping the registry in force",
                    r.trust_domain(),
                    state.1.trust_domain()
                ),
                Ok(r) => {
                    info!(registry = %self.path.display(), "registry reloaded");
                    state.1 = Arc::new(r);
                }
                Err(e) => warn!("{e:#}; keeping the registry in force"),
            }
        }
        state.1.clone()
    }
}

/// The registry of the version in force in the store, waiting up to [`STORE_WAIT`] for one
/// that validates; and that version.
async fn first_from_store(
    spec: &eastwall_store::StoreSpec,
) -> anyhow::Result<(Registry, (u64, String))> {
    let deadline = tokio::time::Instant::now() + STORE_WAIT;
    loop {
        let read = async {
            let mut store = eastwall_store::Store::connect(spec).await?;
            match latest(&mut store, None, None).await? {
                Latest::New { version, valid, .. } => {
                    Ok((valid.registry, (version.version, version.hash)))
                }
                Latest::Refused { why, .. } => anyhow::bail!("{why}"),
                Latest::Nothing | Latest::Unchanged { .. } => {
                    anyhow::bail!(
                        "the store holds no configuration yet: apply one (`eastwall apply`)"
                    )
                }
            }
        };
        match read.await {
            Ok(r) => return Ok(r),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(e.context("no registry from the central store"));
            }
            Err(e) => {
                warn!("{e:#}; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Follows the store for the CA service: each new version's registry replaces the one in
/// force, unless it is refused or names another trust domain.
struct CaSync {
    ctx: Arc<Ctx>,
    have: Option<(u64, String)>,
    /// The values of `have`, to catch up from.
    base: Option<eastwall_store::Snapshot>,
}

impl eastwall_store::follow::Sync for CaSync {
    async fn sync(&mut self, store: &mut eastwall_store::Store) -> anyhow::Result<Option<i64>> {
        let Registries::Store { now, .. } = &self.ctx.registry else {
            return Ok(None);
        };
        let have = self.have.as_ref().map(|(v, h)| (*v, h.as_str()));
        match latest(store, have, self.base.as_ref()).await? {
            Latest::Nothing => Ok(None),
            Latest::Unchanged { read_at } => Ok(Some(read_at)),
            Latest::Refused { why, read_at, .. } => {
                warn!("{why}; the registry in force stays");
                Ok(Some(read_at))
            }
            Latest::New {
                version,
                snapshot,
                valid,
                read_at,
            } => {
                if valid.registry.trust_domain() != self.ctx.ca.trust_domain() {
                    warn!(
                        version = version.version,
                        "the registry of version {} is for trust domain {}, not {}; the registry in force stays",
                        version.version,
                        valid.registry.trust_domain(),
                        self.ctx.ca.trust_domain()
                    );
                } else {
                    info!(version = version.version, author = %version.author, "registry reloaded from the central store");
                    now.store(Arc::new(valid.registry));
                }
                self.have = Some((version.version, version.hash));
                self.base = Some(snapshot);
                Ok(Some(read_at))
            }
        }
    }
}

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

fn parse_registry(path: &Path) -> anyhow::Result<Registry> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Registry::parse(&path.display().to_string(), &text).map_err(|d| anyhow::anyhow!("{d}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use eastwall_certs::generate_csr;

    const REGISTRY: &str = "apiVersion: eastwall.dev/v1
kind: Registry
spec:
  trustDomain: corp.example
  nodes:
    - {name: hostA, addresses: [10.0.0.1]}
    - {name: hostB, addresses: [10.0.0.2]}
  workloads:
    - {name: web, node: hostA, addresses: [10.0.1.2]}
    - {name: db, node: hostB, addresses: [10.0.2.2]}
    - {name: hostA-procs, node: hostA, addresses: [10.0.0.1], localUsers: true}
";

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    #[test]
    fn decisions() {
        let ca = Ca::generate("corp.example", Duration::from_secs(3600)).unwrap();
        let reg = Registry::parse("r.yaml", REGISTRY).unwrap();
        let ttl = Duration::from_secs(60);
        let host_a = id("spiffe://corp.example/node/hostA");
        let (web_csr, web_key) = generate_csr(&id("spiffe://corp.example/wl/web")).unwrap();
        let (db_csr, _) = generate_csr(&id("spiffe://corp.example/wl/db")).unwrap();

        let (s, m, cert) = decide(&ca, &reg, &host_a, web_csr.as_bytes(), ttl);
        assert_eq!(s, StatusCode::OK, "{m}");
        let ident = Identity::from_pem(&cert.unwrap(), &web_key).unwrap();
        assert_eq!(ident.id.as_str(), "spiffe://corp.example/wl/web");

        let (s, m, cert) = decide(&ca, &reg, &host_a, db_csr.as_bytes(), ttl);
        assert_eq!(s, StatusCode::FORBIDDEN);
        assert!(cert.is_none());
        assert!(
            m.contains("node `hostA` may not") && m.contains("wl/db"),
            "{m}"
        );

        // A local user of hostA's own processes: hostA may, hostB may not; nor may hostA
        // claim a user of a workload without `localUsers`.
        let (user_csr, _) =
            generate_csr(&id("spiffe://corp.example/user/alice/wl/hostA-procs")).unwrap();
        let (s, m, _) = decide(&ca, &reg, &host_a, user_csr.as_bytes(), ttl);
        assert_eq!(s, StatusCode::OK, "{m}");
        let host_b = id("spiffe://corp.example/node/hostB");
        let (s, _, _) = decide(&ca, &reg, &host_b, user_csr.as_bytes(), ttl);
        assert_eq!(s, StatusCode::FORBIDDEN);
        let (web_user, _) = generate_csr(&id("spiffe://corp.example/user/alice/wl/web")).unwrap();
        let (s, _, _) = decide(&ca, &reg, &host_a, web_user.as_bytes(), ttl);
        assert_eq!(s, StatusCode::FORBIDDEN);

        // Not a node, or a node the registry does not know.
        for who in [
            "spiffe://corp.example/wl/web",
            "spiffe://corp.example/node/hostZ",
            "spiffe://corp.example/node/hostA/x",
        ] {
            let (s, m, _) = decide(&ca, &reg, &id(who), web_csr.as_bytes(), ttl);
            assert_eq!(s, StatusCode::FORBIDDEN, "{who}: {m}");
        }
        // Bad requests.
        for body in [&b"garbage"[..], &[0xff, 0xfe][..], b""] {
            let (s, _, _) = decide(&ca, &reg, &host_a, body, ttl);
            assert_eq!(s, StatusCode::BAD_REQUEST);
        }
        let (foreign, _) = generate_csr(&id("spiffe://other.example/wl/web")).unwrap();
        let (s, _, _) = decide(&ca, &reg, &host_a, foreign.as_bytes(), ttl);
        assert_eq!(s, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn lifetimes() {
        let max = Duration::from_secs(100);
        assert_eq!(requested_ttl(None, max), Ok(max));
        assert_eq!(requested_ttl(Some("a=b"), max), Ok(max));
        assert_eq!(
            requested_ttl(Some("certSecs=4"), max),
            Ok(Duration::from_secs(4))
        );
        assert_eq!(requested_ttl(Some("x=1&certSecs=1000"), max), Ok(max));
        assert!(requested_ttl(Some("certSecs=0"), max).is_err());
        assert!(requested_ttl(Some("certSecs=-1"), max).is_err());
    }

    #[test]
    fn registry_file_follows_changes_and_keeps_the_last_good_one() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("r.yaml");
        std::fs::write(&p, REGISTRY).unwrap();
        let f = RegistryFile::load(&p).unwrap();
        assert_eq!(f.current().workloads_on("hostA").count(), 2);
        // (A comment changes the size too, in case the file system's timestamps are coarse.)
        let moved = REGISTRY.replace("node: hostB", "node: hostA") + "# moved\n";
        std::fs::write(&p, moved).unwrap();
        assert_eq!(f.current().workloads_on("hostA").count(), 3);
        std::fs::write(&p, "kind: [").unwrap();
        assert_eq!(f.current().workloads_on("hostA").count(), 3);
        std::fs::write(&p, REGISTRY.replace("corp.example", "other.example")).unwrap();
        assert_eq!(f.current().trust_domain(), "corp.example");
    }
}
