//! The admin endpoint (loopback by default): `/healthz`, `/livez`, `/metrics`, `/flows`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::debug;

use crate::telemetry::Telemetry;
use crate::telemetry::health::HealthStatus;

/// Binds the admin endpoint.
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// What the admin endpoint serves: the node's telemetry and health.
pub(crate) struct AdminView {
    /// Metrics, the recent EVE events, health.
    pub(crate) telemetry: Arc<Telemetry>,
    /// The node's limits in words, for a degraded `/healthz`.
    pub(crate) limits: String,
}

/// Serves admin requests until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, view: Arc<AdminView>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let view = view.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let view = view.clone();
                async move { Ok::<_, Infallible>(route(&req, &view)) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                debug!(%e, "admin connection");
            }
        });
    }
}

fn route(req: &Request<Incoming>, view: &AdminView) -> Response<Full<Bytes>> {
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
        "/flows" => {
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
            "not found: try /healthz, /livez, /metrics, /flows\n".into(),
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
