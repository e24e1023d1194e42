//! A small HTTP server for the lab's workloads (hyper; HTTP/1.1 and HTTP/2 with prior
//! knowledge on the same port): answers every request with 200 and a body naming the method,
//! the path and itself, and keeps the list of requests it received, so tests can check what
//! reached the server and what a node stopped. `Upgrade: echo` switches protocols and echoes the upgraded stream.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// What a lab HTTP server received.
#[derive(Clone, Default)]
pub struct Received {
    requests: Arc<Mutex<Vec<String>>>,
    authorities: Arc<Mutex<Vec<String>>>,
}

impl Received {
    /// Each request as `METHOD /path?query` with `HTTP/x`, oldest first.
    pub fn requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The authority each request named, as the server read it: the target's (absolute form,
    /// HTTP/2 `:authority`) and every `Host` header, as `target=… host=…,…`.
    pub fn authorities(&self) -> Vec<String> {
        self.authorities
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Answers an `Upgrade: echo` request with 101 and echoes the upgraded stream.
fn switch_to_echo(mut req: Request<Incoming>) -> Response<Full<Bytes>> {
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(u) = upgrade.await {
            let (mut r, mut w) = tokio::io::split(TokioIo::new(u));
            let _ = tokio::io::copy(&mut r, &mut w).await;
        }
    });
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
    resp.headers_mut().insert(
        hyper::header::UPGRADE,
        hyper::header::HeaderValue::from_static("echo"),
    );
    resp.headers_mut().insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("upgrade"),
    );
    resp
}

/// Serves HTTP on `addr` from the calling thread's network namespace (run it on a thread that
/// entered the workload's namespace); returns once the listener is bound.
pub(crate) fn spawn(name: String, addr: SocketAddr) -> anyhow::Result<Received> {
    let received = Received::default();
    let r = received.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(format!("http-{name}-{}", addr.port()))
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(anyhow::Error::from(e)));
                    return;
                }
            };
            rt.block_on(async move {
                let l = match tokio::net::TcpListener::bind(addr).await {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = tx.send(Err(e.into()));
                        return;
                    }
                };
                let _ = tx.send(Ok(()));
                loop {
                    let Ok((s, _)) = l.accept().await else {
                        continue;
                    };
                    let (name, r) = (name.clone(), r.clone());
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                            let (name, r) = (name.clone(), r.clone());
                            async move {
                                // `Upgrade: echo`: switch protocols, then echo what comes.
                                if req
                                    .headers()
                                    .get(hyper::header::UPGRADE)
                                    .is_some_and(|u| u == "echo")
                                {
                                    return Ok::<_, Infallible>(switch_to_echo(req));
                                }
                                let line = format!(
                                    "{} {} {:?}",
                                    req.method(),
                                    req.uri().path_and_query().map_or("/", |p| p.as_str()),
                                    req.version()
                                );
                                let hosts: Vec<&str> = req
                                    .headers()
                                    .get_all(hyper::header::HOST)
                                    .iter()
                                    .map(|h| h.to_str().unwrap_or("?"))
                                    .collect();
                                let authority = format!(
                                    "target={} host={}",
                                    req.uri().authority().map_or("", |a| a.as_str()),
                                    hosts.join(",")
                                );
                                r.requests
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .push(line.clone());
                                r.authorities
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .push(authority);
                                // Read the body, so a keep-alive connection goes on.
                                let body = req.into_body().collect().await.map(|b| b.to_bytes());
                                let n = body.map_or(0, |b| b.len());
                                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!(
                                    "{line} ({n} body bytes) answered by {name}\n"
                                )))))
                            }
                        });
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection_with_upgrades(TokioIo::new(s), svc)
                            .await;
                    });
                }
            });
        })
        .context("HTTP server thread")?;
    rx.recv_timeout(std::time::Duration::from_secs(5))
        .context("HTTP server did not start")??;
    Ok(received)
}
