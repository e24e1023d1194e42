//! The admin endpoint (loopback by default): `/healthz`, `/livez`, `/metrics`, `/flows`,
//! behind a bearer token when one is configured (required off loopback); and the metrics
//! listener: `/metrics`, `/healthz`, `/livez` only, for Prometheus and probes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tracing::debug;

use crate::telemetry::Telemetry;
use crate::telemetry::health::HealthStatus;

/// Binds the admin endpoint.
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// What a listener serves: the node's telemetry and health.
pub(crate) struct AdminView {
    /// Metrics, the recent EVE events, health.
    pub(crate) telemetry: Arc<Telemetry>,
    /// The node's limits in words, for a degraded `/healthz`.
    pub(crate) limits: String,
    /// The bearer token every request must carry, if any.
    pub(crate) token: Option<String>,
    /// Which paths it serves.
    pub(crate) scope: Scope,
}

/// What a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Everything: also the recent flows.
    Admin,
    /// Metrics and probes only.
    Metrics,
}

/// Reads the admin token of `path`: its first line, at least 16 characters.
pub(crate) fn read_token(path: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("admin token {}: {e}", path.display()))?;
    let token = text.lines().next().unwrap_or_default().trim().to_owned();
    if token.len() < 16 {
        anyhow::bail!(
            "admin token {}: at least 16 characters on its first line (e.g. `openssl rand -hex 32`)",
            path.display()
        );
    }
    Ok(token)
}

/// Connections served at once (more wait in the kernel's queue): a listener may face the
/// network, and a scrape needs one.
const MAX_CONNECTIONS: usize = 64;
/// A client slower than this with a request's head is cut off.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a connection lives (a scrape takes milliseconds).
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// Serves admin requests until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, view: Arc<AdminView>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                debug!(%e, "admin accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let view = view.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let svc = service_fn(move |req| {
                let view = view.clone();
                async move { Ok::<_, Infallible>(route(&req, &view)) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            match tokio::time::timeout(CONNECTION_LIFETIME, conn).await {
                Ok(Err(e)) => debug!(%e, "admin connection"),
                Err(_) => debug!("admin connection: lifetime over"),
                Ok(Ok(())) => {}
            }
        });
    }
}

/// Whether `req` carries the view's token (or the view needs none).
fn authorized(req: &Request<Incoming>, view: &AdminView) -> bool {
    let Some(token) = &view.token else {
        return true;
    };
    req.headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| {
            aws_lc_rs::constant_time::verify_slices_are_equal(given.as_bytes(), token.as_bytes())
                .is_ok()
        })
}

fn route(req: &Request<Incoming>, view: &AdminView) -> Response<Full<Bytes>> {
    if !authorized(req, view) {
        let mut r = text(
            StatusCode::UNAUTHORIZED,
            "unauthorized: send Authorization: Bearer <the admin token>\n".into(),
            "text/plain",
        );
        r.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Bearer"),
        );
        return r;
    }
    if req.method() != Method::GET {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET\n".into(),
            "text/plain",
        );
    }
    match req.uri().path() {
        // Ready or not: what a load balancer or a readiness probe asks.
        "/healthz" => match view.telemetry.health.status(&view.limits) {
            HealthStatus::Ok => text(StatusCode::OK, "ok\n".into(), "text/plain"),
            HealthStatus::Stopping => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "stopping\n".into(),
                "text/plain",
            ),
            HealthStatus::Starting => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "starting\n".into(),
                "text/plain",
            ),
            HealthStatus::Degraded(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("degraded: {why}\n"),
                "text/plain",
            ),
        },
        // Alive: what a supervisor asks before restarting (a degraded node is alive).
        "/livez" => text(StatusCode::OK, "alive\n".into(), "text/plain"),
        "/metrics" => metrics(req, view),
        "/flows" if view.scope == Scope::Admin => {
            let limit = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("limit=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or(usize::MAX);
            text(
                StatusCode::OK,
                view.telemetry.flows.recent_json(limit),
                "application/json",
            )
        }
        _ => text(
            StatusCode::NOT_FOUND,
            match view.scope {
                Scope::Admin => "not found: try /healthz, /livez, /metrics, /flows\n",
                Scope::Metrics => "not found: try /metrics, /healthz, /livez\n",
            }
            .into(),
            "text/plain",
        ),
    }
}

/// The metrics, in OpenMetrics when the scraper asks for it (Prometheus does), else in the
/// Prometheus text format.
fn metrics(req: &Request<Incoming>, view: &AdminView) -> Response<Full<Bytes>> {
    let om = view.telemetry.metrics.encode();
    let wants_om = req
        .headers()
        .get_all(hyper::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    if wants_om {
        text(
            StatusCode::OK,
            om,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
    } else {
        text(
            StatusCode::OK,
            crate::telemetry::metrics::classic_text(&om),
            "text/plain; version=0.0.4; charset=utf-8",
        )
    }
}

fn text(status: StatusCode, body: String, ctype: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(ctype),
    );
    r
}
