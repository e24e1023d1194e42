//! `eastwall console`: one web page for the whole private cloud, served by eastwall itself
//! (no internet at run time: the page, its script and styles are in the binary).
//!
//! - HTTPS only (the console's certificate and key, e.g. issued by the eastwall CA); every
//!   answer carries a strict Content-Security-Policy (scripts from the console only, no
//!   inline script), `nosniff`, no framing, no referrer.
//! - Sign-in ([`auth`]): a name and password, checked against local users (Argon2id hashes)
//!   or the LDAP directory eastwall already talks to; the role (`reader`, `admin`) comes from
//!   the user's groups. A session is a random cookie (`Secure; HttpOnly; SameSite=Strict`);
//!   every state-changing request repeats the session's CSRF token in `x-eastwall-csrf` and
//!   is JSON (a cross-site form cannot send it).
//! - Data: the configuration in force followed from the central store (registry, policy,
//!   version), nodes' statuses read from it, flows and per-edge aggregates asked of the
//!   collector as an operator. `apply` writes through [`eastwall_store::Store::apply`], the
//!   path `eastwall apply` takes, guarded by the version the user edited, with the user's
//!   name in the history.
//!
//! Nothing under `/api/` answers without a session; the page itself holds no data.

pub mod auth;
pub mod config;
pub mod view;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use arc_swap::ArcSwapOption;
use bytes::Bytes;
use eastwall_flows::edge::Edge;
use eastwall_flows::observation::Observations;
use eastwall_flows::recommend::{self, Options};
use eastwall_policy::{Endpoint, Flow, HttpRequestFacts, L7, Policy, Protocol, Registry};
use eastwall_store::follow::{Latest, latest};
use eastwall_store::{ApplyError, NodeState, Part, Snapshot, Store, Version};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, SET_COOKIE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tracing::{info, warn};

use self::auth::{Role, Session, Sessions, SignIn, SignInError, same_secret};
use self::config::ConsoleConfig;
use crate::collector::client::CollectorClient;

/// The session cookie's name.
pub const COOKIE: &str = "eastwall_session";
/// The header repeating the session's CSRF token.
pub const CSRF_HEADER: &str = "x-eastwall-csrf";
/// Largest request body (a candidate policy).
const MAX_BODY: usize = 4 << 20;
/// Connections served at once.
const MAX_CONNECTIONS: usize = 256;
/// Longest a connection lives (the page polls; browsers reconnect).
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest window asked for, in hours (90 days).
const MAX_HOURS: u64 = 90 * 24;
/// Records read at most for a replay.
const MAX_RECORDS: u64 = 2_000_000;
/// How long the aggregates of a window are reused.
const EDGES_FRESH: Duration = Duration::from_secs(10);
/// Filter parameters and the length of each, at most.
const MAX_PARAMS: usize = 32;
const MAX_PARAM_LEN: usize = 512;

const INDEX_HTML: &str = include_str!("assets/index.html");
const CONSOLE_JS: &str = include_str!("assets/console.js");
const CONSOLE_CSS: &str = include_str!("assets/console.css");

/// The configuration in force, as the console last read it.
struct InForce {
    version: Version,
    registry: Registry,
    policy: Policy,
    policy_text: String,
}

/// Aggregates fetched for a window, and when.
type Fetched = (Instant, Arc<Vec<Edge>>);

struct Ctx {
    cfg: ConsoleConfig,
    sign_in: SignIn,
    sessions: Sessions,
    collector: CollectorClient,
    in_force: ArcSwapOption<InForce>,
    store: tokio::sync::Mutex<Option<Store>>,
    edges: Mutex<HashMap<u64, Fetched>>,
    heavy: tokio::sync::Semaphore,
}

/// Runs `eastwall console --config FILE` until stopped.
pub fn run(config: &Path) -> anyhow::Result<()> {
    let cfg = ConsoleConfig::load(config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("listening on {}", cfg.listen))?;
        let addr = listener.local_addr()?;
        info!("console on https://{addr}/");
        tokio::select! {
            r = serve(cfg, listener) => r,
            _ = tokio::signal::ctrl_c() => Ok(()),
            _ = async {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut s) => { s.recv().await; }
                    Err(_) => std::future::pending::<()>().await,
                }
            } => Ok(()),
        }
    })
}

/// Serves the console on `listener` until the future is dropped.
pub async fn serve(cfg: ConsoleConfig, listener: TcpListener) -> anyhow::Result<()> {
    let tls = server_tls(&cfg)?;
    let local = match &cfg.sign_in.users {
        Some(p) => {
            let text = crate::config::read_file(p)?;
            config::parse_users(p, &text).map_err(|d| anyhow::anyhow!("{d}"))?
        }
        None => Vec::new(),
    };
    let ldap = match &cfg.sign_in.ldap {
        Some(l) => Some(crate::directory::ldap_directory(
            l,
            Path::new("."),
            Duration::from_secs(5),
            None,
        )?),
        None => None,
    };
    let bundle = CollectorClient::read_bundle(&cfg.collector.trust_bundle)?;
    let collector = CollectorClient::new(
        &cfg.collector.url,
        bundle,
        cfg.collector.cert.clone(),
        cfg.collector.key.clone(),
    )?;
    let ctx = Arc::new(Ctx {
        sign_in: SignIn::new(&cfg.sign_in, local, ldap)?,
        sessions: Sessions::new(
            Duration::from_secs(cfg.sign_in.session_minutes * 60),
            Duration::from_secs(cfg.sign_in.idle_minutes * 60),
        ),
        collector,
        in_force: ArcSwapOption::empty(),
        store: tokio::sync::Mutex::new(None),
        edges: Mutex::new(HashMap::new()),
        heavy: tokio::sync::Semaphore::new(1),
        cfg,
    });
    {
        let ctx = ctx.clone();
        let spec = ctx.cfg.store.clone();
        tokio::spawn(async move {
            let syncer = InForceSync {
                ctx,
                have: None,
                base: None,
            };
            eastwall_store::follow::follow(&spec, "the console shows what it read last", syncer)
                .await;
        });
    }
    crate::mtls::serve(
        listener,
        tls,
        MAX_CONNECTIONS,
        CONNECTION_TIMEOUT,
        move |req, _peer| {
            let ctx = ctx.clone();
            async move { secure(handle(req, &ctx).await) }
        },
    )
    .await
}

/// TLS for browsers: the console's certificate, no client certificate asked.
fn server_tls(cfg: &ConsoleConfig) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(&cfg.tls_cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("{}: {e}", cfg.tls_cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&cfg.tls_key)
        .map_err(|e| anyhow::anyhow!("{}: {e}", cfg.tls_key.display()))?;
    let mut c = rustls::ServerConfig::builder_with_provider(eastwall_certs::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| anyhow::anyhow!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| anyhow::anyhow!("the console's certificate: {e}"))?;
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(c)))
}

/// Follows the version in force for the console.
struct InForceSync {
    ctx: Arc<Ctx>,
    have: Option<(u64, String)>,
    base: Option<Snapshot>,
}

impl eastwall_store::follow::Sync for InForceSync {
    async fn sync(&mut self, store: &mut Store) -> anyhow::Result<Option<i64>> {
        let have = self.have.as_ref().map(|(v, h)| (*v, h.as_str()));
        match latest(store, have, self.base.as_ref()).await? {
            Latest::Nothing => Ok(None),
            Latest::Unchanged { read_at } => Ok(Some(read_at)),
            Latest::Refused { why, read_at, .. } => {
                warn!("{why}; the console shows the version it read last");
                Ok(Some(read_at))
            }
            Latest::New {
                version,
                snapshot,
                valid,
                read_at,
            } => {
                let policy_text = snapshot
                    .get(eastwall_store::snapshot::POLICY)
                    .unwrap_or_default()
                    .to_owned();
                info!(
                    version = version.version,
                    "the console reads version {}", version.version
                );
                self.ctx.in_force.store(Some(Arc::new(InForce {
                    version: version.clone(),
                    registry: valid.registry,
                    policy: valid.policy,
                    policy_text,
                })));
                self.have = Some((version.version, version.hash));
                self.base = Some(snapshot);
                Ok(Some(read_at))
            }
        }
    }
}

/// An answer.
type Answer = Response<Full<Bytes>>;

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Answer {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    r
}

fn json_reply(status: StatusCode, v: &Value) -> Answer {
    reply(status, "application/json", v.to_string())
}

fn problem(status: StatusCode, why: impl std::fmt::Display) -> Answer {
    json_reply(status, &json!({ "error": why.to_string() }))
}

/// A request refused before its answer was made: the status and why.
struct Refusal {
    status: StatusCode,
    why: String,
}

fn refuse(status: StatusCode, why: impl std::fmt::Display) -> Refusal {
    Refusal {
        status,
        why: why.to_string(),
    }
}

impl From<Refusal> for Answer {
    fn from(r: Refusal) -> Answer {
        problem(r.status, r.why)
    }
}

/// The headers every answer carries.
fn secure(mut r: Answer) -> Answer {
    let h = r.headers_mut();
    for (k, v) in [
        (
            "content-security-policy",
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
        ("strict-transport-security", "max-age=31536000"),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    r
}

/// The session cookie's token in `req`.
fn cookie_token(req: &Request<Incoming>) -> Option<String> {
    req.headers()
        .get_all(hyper::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// Whether a request that changes something comes from the console's own page: JSON, and
/// from its own origin when the browser says.
fn same_origin_json(req: &Request<Incoming>) -> Result<(), &'static str> {
    let json = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return Err("requests that change something are JSON");
    }
    if let Some(origin) = req.headers().get(hyper::header::ORIGIN) {
        let host = req
            .headers()
            .get(hyper::header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if origin.to_str().ok() != Some(&format!("https://{host}")) {
            return Err("cross-origin request refused");
        }
    }
    Ok(())
}

async fn body_json(req: Request<Incoming>) -> Result<Value, Refusal> {
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|_| refuse(StatusCode::PAYLOAD_TOO_LARGE, "the request is too large"))?
        .to_bytes();
    serde_json::from_slice(&body)
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, format!("not JSON: {e}")))
}

async fn handle(req: Request<Incoming>, ctx: &Arc<Ctx>) -> Answer {
    let path = req.uri().path().to_owned();
    match (req.method(), path.as_str()) {
        (&Method::GET, "/") | (&Method::GET, "/index.html") => {
            reply(StatusCode::OK, "text/html; charset=utf-8", INDEX_HTML)
        }
        (&Method::GET, "/console.js") => {
            reply(StatusCode::OK, "text/javascript; charset=utf-8", CONSOLE_JS)
        }
        (&Method::GET, "/console.css") => {
            reply(StatusCode::OK, "text/css; charset=utf-8", CONSOLE_CSS)
        }
        (&Method::POST, "/api/login") => login(req, ctx).await,
        (_, p) if p.starts_with("/api/") => {
            let session = cookie_token(&req).and_then(|t| ctx.sessions.get(&t).map(|s| (t, s)));
            let Some((token, session)) = session else {
                return problem(StatusCode::UNAUTHORIZED, "sign in first");
            };
            if req.method() != Method::GET {
                if let Err(why) = same_origin_json(&req) {
                    return problem(StatusCode::FORBIDDEN, why);
                }
                let csrf = req
                    .headers()
                    .get(CSRF_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if !same_secret(csrf, &session.csrf) {
                    return problem(StatusCode::FORBIDDEN, "missing or wrong CSRF token");
                }
            }
            api(req, ctx, &token, &session).await
        }
        _ => problem(StatusCode::NOT_FOUND, "no such page"),
    }
}

async fn login(req: Request<Incoming>, ctx: &Arc<Ctx>) -> Answer {
    if let Err(why) = same_origin_json(&req) {
        return problem(StatusCode::FORBIDDEN, why);
    }
    let v = match body_json(req).await {
        Ok(v) => v,
        Err(a) => return a.into(),
    };
    let (Some(user), Some(password)) = (v["user"].as_str(), v["password"].as_str()) else {
        return problem(StatusCode::BAD_REQUEST, "give `user` and `password`");
    };
    match ctx.sign_in.verify(user, password).await {
        Ok(p) => {
            let (token, session) = match ctx.sessions.start(p) {
                Ok(x) => x,
                Err(e) => return problem(StatusCode::INTERNAL_SERVER_ERROR, e),
            };
            let mut r = json_reply(StatusCode::OK, &session_json(&session));
            let cookie = format!(
                "{COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
                ctx.sessions.lifetime().as_secs()
            );
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(SET_COOKIE, v);
            }
            r
        }
        Err(e @ (SignInError::Refused | SignInError::NoRole(_))) => {
            problem(StatusCode::UNAUTHORIZED, e)
        }
        Err(e @ SignInError::Throttled(_)) => problem(StatusCode::TOO_MANY_REQUESTS, e),
        Err(e @ SignInError::Unavailable(_)) => problem(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

fn session_json(s: &Session) -> Value {
    json!({
        "user": s.principal.user,
        "role": s.principal.role.as_str(),
        "source": s.principal.source,
        "csrf": s.csrf,
    })
}

/// The query's parameters, bounded.
fn params(req: &Request<Incoming>) -> Result<Vec<(String, String)>, Refusal> {
    let q = req.uri().query().unwrap_or("");
    let p = crate::collector::form_urlencoded(q);
    if p.len() > MAX_PARAMS || p.iter().any(|(k, v)| k.len() + v.len() > MAX_PARAM_LEN) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "filters too large: at most {MAX_PARAMS} of at most {MAX_PARAM_LEN} characters"
            ),
        ));
    }
    Ok(p)
}

fn param<'a>(p: &'a [(String, String)], k: &str) -> Option<&'a str> {
    p.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str())
}

/// The window asked (`hours`, default a day), as the collector's `since`.
fn since_of(hours: Option<&str>) -> Result<(u64, String), Refusal> {
    let h = match hours {
        None | Some("") => 24,
        Some(h) => h
            .parse::<u64>()
            .ok()
            .filter(|h| (1..=MAX_HOURS).contains(h))
            .ok_or_else(|| {
                refuse(
                    StatusCode::BAD_REQUEST,
                    format!("`hours`: 1 to {MAX_HOURS}"),
                )
            })?,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let since = now.saturating_sub(Duration::from_secs(h * 3600));
    Ok((h, eastwall_wire::eve::timestamp_unix(since)))
}

async fn api(req: Request<Incoming>, ctx: &Arc<Ctx>, token: &str, session: &Session) -> Answer {
    let path = req.uri().path().to_owned();
    let p = match params(&req) {
        Ok(p) => p,
        Err(a) => return a.into(),
    };
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/api/session") => json_reply(StatusCode::OK, &session_json(session)),
        (Method::POST, "/api/logout") => {
            ctx.sessions.end(token);
            let mut r = json_reply(StatusCode::OK, &json!({}));
            r.headers_mut().insert(
                SET_COOKIE,
                HeaderValue::from_static(
                    "eastwall_session=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0",
                ),
            );
            r
        }
        (Method::GET, "/api/topology") => topology(ctx, &p).await,
        (Method::GET, "/api/flows") => flows(ctx, &p).await,
        (Method::GET, "/api/nodes") => nodes(ctx).await,
        (Method::GET, "/api/rules") => rules(ctx, &p).await,
        (Method::GET, "/api/explain") => explain(ctx, &p),
        (Method::GET, "/api/recommend") => recommend(ctx, &p).await,
        (Method::POST, "/api/replay") => match body_json(req).await {
            Ok(v) => replay(ctx, &v).await,
            Err(a) => a.into(),
        },
        (Method::POST, "/api/apply") => {
            if session.principal.role != Role::Admin {
                return problem(StatusCode::FORBIDDEN, "only admins apply");
            }
            match body_json(req).await {
                Ok(v) => apply(ctx, &v, &session.principal.user).await,
                Err(a) => a.into(),
            }
        }
        _ => problem(StatusCode::NOT_FOUND, "no such request"),
    }
}

fn in_force(ctx: &Ctx) -> Result<Arc<InForce>, Refusal> {
    ctx.in_force.load_full().ok_or_else(|| {
        refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the console has not read the central store yet (nothing applied, or the store is unreachable)",
        )
    })
}

/// The aggregates of the last `hours`, reused for [`EDGES_FRESH`].
async fn edges_of(ctx: &Ctx, hours: u64, since: &str) -> Result<Arc<Vec<Edge>>, Refusal> {
    if let Some((at, e)) = ctx
        .edges
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&hours)
        && at.elapsed() < EDGES_FRESH
    {
        return Ok(e.clone());
    }
    let edges = ctx
        .collector
        .edges(since, None)
        .await
        .map_err(|e| refuse(StatusCode::BAD_GATEWAY, format!("the collector: {e:#}")))?;
    let edges = Arc::new(edges);
    let mut cache = ctx.edges.lock().unwrap_or_else(|p| p.into_inner());
    cache.retain(|_, (at, _)| at.elapsed() < EDGES_FRESH);
    cache.insert(hours, (Instant::now(), edges.clone()));
    Ok(edges)
}

/// The configuration in force, and the aggregates of the window `p` asks (and its start).
async fn in_force_and_edges(
    ctx: &Ctx,
    p: &[(String, String)],
) -> Result<(Arc<InForce>, Arc<Vec<Edge>>, String), Refusal> {
    let f = in_force(ctx)?;
    let (hours, since) = since_of(param(p, "hours"))?;
    let edges = edges_of(ctx, hours, &since).await?;
    Ok((f, edges, since))
}

async fn topology(ctx: &Ctx, p: &[(String, String)]) -> Answer {
    let (f, edges, since) = match in_force_and_edges(ctx, p).await {
        Ok(x) => x,
        Err(a) => return a.into(),
    };
    let mut v = view::topology(&f.registry, &edges);
    v["version"] = json!({"version": f.version.version, "hash": f.version.hash});
    v["since"] = json!(since);
    json_reply(StatusCode::OK, &v)
}

/// The collector's filter parameters the flows view may pass on.
const FLOW_FILTERS: &[&str] = &[
    "from", "to", "verdict", "rule", "proto", "port", "method", "path", "type", "node", "since",
    "until",
];

async fn flows(ctx: &Ctx, p: &[(String, String)]) -> Answer {
    let mut q = Vec::new();
    for (k, v) in p {
        if FLOW_FILTERS.contains(&k.as_str()) && !v.is_empty() {
            q.push(format!("{k}={}", crate::collector::client::encode(v)));
        } else if !matches!(k.as_str(), "after" | "limit") {
            return problem(StatusCode::BAD_REQUEST, format!("unknown filter `{k}`"));
        }
    }
    let after = match param(p, "after")
        .filter(|a| !a.is_empty())
        .map(str::parse::<i64>)
    {
        None => None,
        Some(Ok(a)) => Some(a),
        Some(Err(_)) => return problem(StatusCode::BAD_REQUEST, "`after` is a record id"),
    };
    let limit = param(p, "limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(200)
        .clamp(1, 1000);
    match ctx.collector.page(&q.join("&"), after, limit).await {
        Ok(page) => {
            let records: Vec<Value> = page
                .text
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            json_reply(
                StatusCode::OK,
                &json!({"records": records, "last": page.last, "more": page.more}),
            )
        }
        Err(e) => problem(StatusCode::BAD_GATEWAY, format!("the collector: {e:#}")),
    }
}

/// The connected store (connected again after a failure).
async fn store(ctx: &Ctx) -> Result<Store, Refusal> {
    let mut slot = ctx.store.lock().await;
    if let Some(s) = slot.as_ref() {
        return Ok(s.clone());
    }
    let s = Store::connect(&ctx.cfg.store)
        .await
        .map_err(|e| refuse(StatusCode::BAD_GATEWAY, format!("the central store: {e:#}")))?;
    *slot = Some(s.clone());
    Ok(s)
}

async fn forget_store(ctx: &Ctx) {
    *ctx.store.lock().await = None;
}

async fn nodes(ctx: &Ctx) -> Answer {
    let mut s = match store(ctx).await {
        Ok(s) => s,
        Err(a) => return a.into(),
    };
    let read = async {
        let (version, _, _) = s.version().await?;
        let statuses = s.statuses().await?;
        anyhow::Ok((version, statuses))
    }
    .await;
    let (version, statuses) = match read {
        Ok(x) => x,
        Err(e) => {
            forget_store(ctx).await;
            return problem(StatusCode::BAD_GATEWAY, format!("the central store: {e:#}"));
        }
    };
    let latest = version.as_ref().map_or(0, |v| v.version);
    let mut names: Vec<String> = ctx
        .in_force
        .load()
        .as_ref()
        .map(|f| f.registry.nodes().iter().map(|n| n.name.clone()).collect())
        .unwrap_or_default();
    for n in statuses.keys() {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    names.sort();
    let list: Vec<Value> = names
        .iter()
        .map(|n| {
            let st = statuses.get(n);
            let state = NodeState::of(st, latest);
            let mut v = st.cloned().unwrap_or_else(|| json!({}));
            v["node"] = json!(n);
            v["state"] = json!(state.as_str());
            v["drift"] = json!(state.drifts());
            v
        })
        .collect();
    json_reply(StatusCode::OK, &json!({"latest": version, "nodes": list}))
}

async fn rules(ctx: &Ctx, p: &[(String, String)]) -> Answer {
    let (f, edges, since) = match in_force_and_edges(ctx, p).await {
        Ok(x) => x,
        Err(a) => return a.into(),
    };
    let mut v = view::rules(&f.policy, &edges);
    v["version"] = json!(f.version);
    v["text"] = json!(f.policy_text);
    v["since"] = json!(since);
    json_reply(StatusCode::OK, &v)
}

fn explain(ctx: &Ctx, p: &[(String, String)]) -> Answer {
    let f = match in_force(ctx) {
        Ok(f) => f,
        Err(a) => return a.into(),
    };
    let side = |k: &str| -> Result<&eastwall_policy::Workload, Refusal> {
        let name = param(p, k).unwrap_or("");
        f.registry.workload(name).ok_or_else(|| {
            refuse(
                StatusCode::BAD_REQUEST,
                format!("`{k}`: {name:?} is not a workload of the registry"),
            )
        })
    };
    let (src, dst) = match (side("from"), side("to")) {
        (Ok(s), Ok(d)) => (s, d),
        (Err(a), _) | (_, Err(a)) => return a.into(),
    };
    let proto = match param(p, "proto")
        .unwrap_or("tcp")
        .to_ascii_lowercase()
        .as_str()
    {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        other => {
            return problem(
                StatusCode::BAD_REQUEST,
                format!("`proto`: {other:?} (tcp or udp)"),
            );
        }
    };
    let Some(port) = param(p, "port").and_then(|x| x.parse::<u16>().ok()) else {
        return problem(StatusCode::BAD_REQUEST, "`port`: a port number");
    };
    let (Some(&src_addr), Some(&dst_addr)) = (src.addresses.first(), dst.addresses.first()) else {
        return problem(StatusCode::BAD_REQUEST, "a workload without an address");
    };
    let user = src.identity.user().map(str::to_owned);
    let method = param(p, "method").filter(|m| !m.is_empty());
    let path = match param(p, "path").filter(|m| !m.is_empty()) {
        Some(raw) => match eastwall_policy::normalize_path(raw) {
            Ok(n) => Some(n),
            Err(e) => return problem(StatusCode::BAD_REQUEST, format!("`path`: {e}")),
        },
        None => None,
    };
    let headers = http::HeaderMap::new();
    let facts = match (method, &path) {
        (Some(m), Some(path)) => Some(HttpRequestFacts {
            method: m,
            host: None,
            path,
            headers: &headers,
        }),
        (None, None) => None,
        _ => {
            return problem(
                StatusCode::BAD_REQUEST,
                "give both `method` and `path`, or neither",
            );
        }
    };
    fn end<'a>(
        w: &'a eastwall_policy::Workload,
        addr: std::net::IpAddr,
        user: Option<&'a str>,
    ) -> Endpoint<'a> {
        Endpoint {
            addr,
            workload: Some(w),
            identity: Some(&w.identity),
            user,
            groups: None,
        }
    }
    let mut flow = Flow::new(
        end(src, src_addr, user.as_deref()),
        end(dst, dst_addr, None),
        port,
    )
    .with_protocol(proto);
    if let Some(facts) = &facts {
        flow = flow.with_l7(L7::Http(facts));
    }
    let e = f.policy.explain(&flow);
    json_reply(
        StatusCode::OK,
        &json!({
            "verdict": e.decision.action.to_string(),
            "rule": e.decision.rule.as_ref().map(|r| r.id.to_string()),
            "text": e.to_string(),
        }),
    )
}

/// The records of the window `p` asks, read as observations (off the async workers).
async fn observations(ctx: &Ctx, hours: Option<&str>) -> Result<Observations, Refusal> {
    let (_, since) = since_of(hours)?;
    let query = format!("since={}", crate::collector::client::encode(&since));
    let mut o = Observations::default();
    let mut after = 0;
    loop {
        let page = ctx
            .collector
            .page(&query, Some(after), crate::collector::MAX_LIMIT)
            .await
            .map_err(|e| refuse(StatusCode::BAD_GATEWAY, format!("the collector: {e:#}")))?;
        if !page.text.is_empty() {
            // Parsing a page is CPU work: not on the async workers.
            let text = page.text;
            o = tokio::task::spawn_blocking(move || {
                o.read("collector", &text);
                o
            })
            .await
            .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e))?;
        }
        if o.records > MAX_RECORDS {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                format!("more than {MAX_RECORDS} records in the window: choose fewer hours"),
            ));
        }
        match page.last {
            Some(l) if page.more && l > after => after = l,
            _ => return Ok(o),
        }
    }
}

/// The one recommendation or replay running (a replay reads up to [`MAX_RECORDS`] records; a
/// recommendation, a window's aggregates).
fn one_heavy(ctx: &Ctx) -> Result<tokio::sync::SemaphorePermit<'_>, Refusal> {
    ctx.heavy.try_acquire().map_err(|_| {
        refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "another recommendation or replay is running: try again when it is done",
        )
    })
}

async fn recommend(ctx: &Ctx, p: &[(String, String)]) -> Answer {
    let f = match in_force(ctx) {
        Ok(f) => f,
        Err(a) => return a.into(),
    };
    let _one = match one_heavy(ctx) {
        Ok(p) => p,
        Err(a) => return a.into(),
    };
    // From the aggregates (whole days): weeks of traffic in thousands of edges.
    let (_, edges, since) = match in_force_and_edges(ctx, p).await {
        Ok(x) => x,
        Err(a) => return a.into(),
    };
    let (list, skipped) = eastwall_flows::edge::observations(&edges, &f.registry);
    let opts = Options {
        app: param(p, "app").filter(|s| !s.is_empty()).map(str::to_owned),
        zone: param(p, "zone")
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        monitor: param(p, "monitor") == Some("1"),
    };
    let r = recommend::recommend(&list, &f.registry, &opts);
    if let Err(d) = Policy::parse("the recommended policy", &r.yaml, &f.registry) {
        return problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the recommendation does not validate (a bug):\n{d}"),
        );
    }
    json_reply(
        StatusCode::OK,
        &json!({
            "yaml": r.yaml,
            "rules": r.rules,
            "covered": r.covered,
            "edges": edges.len(),
            "since": since,
            "skipped": skipped,
            "base": f.version.version,
            "current": f.policy_text,
        }),
    )
}

fn groups_json(g: &[eastwall_flows::replay::Group]) -> Value {
    json!(g
        .iter()
        .map(|g| json!({"edge": g.edge, "before": g.before, "after": g.after, "count": g.count, "examples": g.examples}))
        .collect::<Vec<_>>())
}

async fn replay(ctx: &Ctx, v: &Value) -> Answer {
    let f = match in_force(ctx) {
        Ok(f) => f,
        Err(a) => return a.into(),
    };
    let Some(text) = v["policy"].as_str() else {
        return problem(StatusCode::BAD_REQUEST, "give `policy` (YAML)");
    };
    let policy = match Policy::parse("candidate", text, &f.registry) {
        Ok((p, _)) => p,
        Err(d) => {
            return json_reply(
                StatusCode::UNPROCESSABLE_ENTITY,
                &json!({"error": "the candidate does not validate", "problems": d.to_string()}),
            );
        }
    };
    let _one = match one_heavy(ctx) {
        Ok(p) => p,
        Err(a) => return a.into(),
    };
    let hours = v["hours"].as_u64().map(|h| h.to_string());
    let o = match observations(ctx, hours.as_deref()).await {
        Ok(o) => o,
        Err(a) => return a.into(),
    };
    let registry_policy = (f.clone(), policy);
    let report = tokio::task::spawn_blocking(move || {
        eastwall_flows::replay::replay(&o.list, &registry_policy.0.registry, &registry_policy.1)
    })
    .await;
    match report {
        Ok(r) => json_reply(
            StatusCode::OK,
            &json!({
                "decisions": r.decisions,
                "unchanged": r.unchanged,
                "breaks": r.breaks(),
                "newlyDenied": groups_json(&r.newly_denied),
                "newlyAllowed": groups_json(&r.newly_allowed),
                "undetermined": groups_json(&r.undetermined),
            }),
        ),
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn apply(ctx: &Ctx, v: &Value, user: &str) -> Answer {
    let (Some(text), Some(base)) = (v["policy"].as_str(), v["base"].as_u64()) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "give `policy` (YAML) and `base` (the version it was edited from)",
        );
    };
    let message = v["message"].as_str().unwrap_or("applied from the console");
    let mut s = match store(ctx).await {
        Ok(s) => s,
        Err(a) => return a.into(),
    };
    let current = match s.current().await {
        Ok(c) => c,
        Err(e) => {
            forget_store(ctx).await;
            return problem(StatusCode::BAD_GATEWAY, format!("the central store: {e:#}"));
        }
    };
    let now = current.version.as_ref().map_or(0, |v| v.version);
    if now != base {
        return problem(
            StatusCode::CONFLICT,
            format!(
                "conflict: version {now} was applied after version {base}, which this candidate was edited from; review it again"
            ),
        );
    }
    let desired = current.snapshot.with(&Part::Policy(text.to_owned()));
    let author = format!("{user} (console)");
    match s
        .apply(
            &current,
            &desired,
            &author,
            &message.chars().take(500).collect::<String>(),
        )
        .await
    {
        Ok(Some(version)) => {
            info!(user, version = version.version, "applied from the console");
            json_reply(StatusCode::OK, &json!({"applied": version}))
        }
        Ok(None) => json_reply(
            StatusCode::OK,
            &json!({"applied": null, "note": "no changes"}),
        ),
        Err(ApplyError::Conflict(why)) => problem(StatusCode::CONFLICT, format!("conflict: {why}")),
        Err(ApplyError::Invalid(d)) => json_reply(
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!({"error": "refused, nothing was written", "problems": d.to_string()}),
        ),
        Err(ApplyError::Store(e)) => {
            forget_store(ctx).await;
            problem(StatusCode::BAD_GATEWAY, format!("the central store: {e:#}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What comes from the network or the registry reaches the page as text only: the
    /// page's script has no way to turn a string into markup or code, and the page itself
    /// has no inline script or event attribute (the CSP would refuse them too).
    #[test]
    fn the_page_never_turns_data_into_markup_or_code() {
        for banned in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
            "setTimeout('",
            "setInterval('",
        ] {
            assert!(!CONSOLE_JS.contains(banned), "console.js uses {banned}");
        }
        let lower = INDEX_HTML.to_ascii_lowercase();
        assert_eq!(
            lower.matches("<script").count(),
            1,
            "one script, from a file"
        );
        assert!(lower.contains("<script src=\"/console.js\""));
        for attr in [
            " onclick=",
            " onload=",
            " onerror=",
            " onsubmit=",
            "javascript:",
        ] {
            assert!(!lower.contains(attr), "index.html has {attr}");
        }
    }

    #[test]
    fn windows_and_filters_are_bounded() {
        assert!(since_of(None).is_ok() && since_of(Some("24")).is_ok());
        for bad in ["0", "2161", "-1", "x", "1e3"] {
            assert!(since_of(Some(bad)).is_err(), "{bad}");
        }
    }
}
