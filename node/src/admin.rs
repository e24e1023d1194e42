//! The admin endpoint (loopback by default): `/healthz`, `/metrics`, `/flows`.

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

use crate::state::NodeState;

/// Binds the admin endpoint.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves admin requests until the task is dropped.
pub async fn serve(listener: TcpListener, state: Arc<NodeState>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&req, &state)) }
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

fn route(req: &Request<Incoming>, state: &NodeState) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET\n".into(),
            "text/plain",
        );
    }
    match req.uri().path() {
        "/healthz" if state.ready.load(std::sync::atomic::Ordering::Acquire) => {
            text(StatusCode::OK, "ok\n".into(), "text/plain")
        }
        "/healthz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "starting\n".into(),
            "text/plain",
        ),
        "/metrics" => text(
            StatusCode::OK,
            state.metrics.encode(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        "/flows" => {
            let limit = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("limit=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or(usize::MAX);
            text(
                StatusCode::OK,
                state.flows.recent_json(limit),
                "application/json",
            )
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /healthz, /metrics, /flows\n".into(),
            "text/plain",
        ),
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
