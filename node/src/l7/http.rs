//! The HTTP layer of the deciding node (hyper on both sides): every request on a keep-alive
//! HTTP/1.1 connection and every HTTP/2 stream is decided on its own, with the policy in force
//! when it arrives. A denied request gets a 403 from the node (its body names the rule unless
//! `l7.denyBodyNamesRule` is off) and the connection goes on; an allowed one is forwarded,
//! with its path normalized (what was decided is what the server sees), over one upstream
//! connection of the same protocol opened from the client's address when the first request is
//! allowed. Each request leaves an EVE `http` event.
//!
//! Bad input: hyper refuses malformed requests (400) and oversized header blocks (431) and
//! closes the connection; a request carrying both `content-length` and `transfer-encoding` is
//! read by `transfer-encoding` alone and the connection is closed after its response (RFC 9112
//! 6.1, so bytes smuggled behind it are never read as a request), and it reaches the server
//! re-framed; a client slower than `l7.headerTimeoutSecs` to send a header block is cut; a
//! request target that does not normalize gets 400. None of the refused ones reaches the
//! server.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use eastwall_policy::{HttpRequestFacts, L7};
use eastwall_wire::eve::{
    self, EveEnds, EveHttp, HttpEvent, IdsInfo, L7Decision, PolicyInfo, RequestCounts,
};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::Authority;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use super::io::{ClientIo, Counts, HeadTap, RawHeads};
use crate::conn::record::{FlowGuard, HttpRecord, policy_info};
use crate::conn::{DenyReason, Ending, Ends, Outcome, Pipeline, Plan};
use eastwall_ids::h1::{self, Role};

/// Body of every response the node sends to a client, and of requests it sends to a server.
type Body = UnsyncBoxBody<Bytes, crate::ids::BoxError>;

/// Which HTTP the client speaks (and the server is spoken to in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proto {
    /// HTTP/1.x.
    H1,
    /// HTTP/2 with prior knowledge (h2c).
    H2,
}

impl Proto {
    /// EVE's `app_proto`.
    pub(crate) fn app_proto(self) -> &'static str {
        match self {
            Proto::H1 => "http",
            Proto::H2 => "http2",
        }
    }
}

/// A request body the node drains before answering a denied request, so that the keep-alive
/// connection stays usable; larger ones close it.
const DRAIN_LIMIT: usize = 64 * 1024;

/// The connection to the server, opened when the first request is allowed.
enum Upstream {
    /// With the response heads as received, when the IDS may read them.
    H1(
        hyper::client::conn::http1::SendRequest<Body>,
        Option<RawHeads>,
    ),
    H2(hyper::client::conn::http2::SendRequest<Body>),
}

/// One inspected HTTP connection.
struct HttpConn {
    pipeline: Arc<Pipeline>,
    /// Both ends, as identified when the connection was accepted.
    ends: Ends,
    proto: Proto,
    flow_id: u64,
    src_info: eve::Endpoint,
    dst_info: eve::Endpoint,
    upstream: tokio::sync::Mutex<Option<Upstream>>,
    counts: Mutex<RequestCounts>,
    last: Mutex<Option<HttpRecord>>,
    /// The IDS inspection per profile the connection's requests were allowed with (HTTP/1:
    /// one transaction after the other on one inspector).
    ids: Mutex<Vec<(Arc<str>, crate::ids::SharedIds)>>,
    /// HTTP/2: each stream is inspected on its own; what finished streams found.
    stream_ids: Arc<Mutex<Option<IdsInfo>>>,
    /// The node and the flow's ends, for the IDS.
    ends_info: EveEnds,
    /// Upgraded exchanges (WebSocket, CONNECT) relayed after hyper let go of them.
    upgraded: Mutex<tokio::task::JoinSet<()>>,
    /// HTTP/1 with IDS rules: the request heads as received, one per request (and then the
    /// response heads likewise on each connection to the server).
    raw_requests: Option<RawHeads>,
}

/// A message head as received, when it is the one of the message hyper parsed; otherwise
/// the heads are out of step with the messages and none are used again.
fn in_step<'h, T>(
    heads: Option<&RawHeads>,
    parsed: Option<&'h T>,
    same: impl FnOnce(&T) -> bool,
) -> Option<&'h T> {
    let parsed = parsed?;
    if same(parsed) {
        return Some(parsed);
    }
    if let Some(h) = heads {
        h.lose();
    }
    None
}

/// Serves one HTTP connection from `io` (its first bytes in `prefix`), each request decided
/// on its own; fills the record and returns how the connection ended.
pub(crate) async fn serve<I>(
    io: I,
    prefix: Bytes,
    proto: Proto,
    ends: &Ends,
    pipeline: &Arc<Pipeline>,
    guard: &mut FlowGuard,
) -> Outcome
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let counts = Counts::default();
    let l7 = &pipeline.l7;
    // Heads as received are kept only where an IDS may read them.
    let raw_requests = (proto == Proto::H1 && pipeline.ids().is_some()).then(RawHeads::default);
    let tap = raw_requests
        .as_ref()
        .map(|h| HeadTap::new(Role::Request, max_head(l7.max_header_bytes), h.clone()));
    let io = TokioIo::new(ClientIo::new(prefix, io, &counts).tapped(tap));
    let carrier = &pipeline.carrier;
    let live = carrier.live.register(ends.clone(), true);
    let http = Arc::new(HttpConn {
        pipeline: pipeline.clone(),
        ends: ends.clone(),
        proto,
        flow_id: guard.flow_id,
        src_info: guard.src_info.clone(),
        dst_info: guard.dst_info.clone(),
        upstream: tokio::sync::Mutex::new(None),
        counts: Mutex::new(RequestCounts::default()),
        last: Mutex::new(None),
        ids: Mutex::new(Vec::new()),
        stream_ids: Arc::new(Mutex::new(None)),
        ends_info: guard.ends(),
        upgraded: Mutex::new(tokio::task::JoinSet::new()),
        raw_requests,
    });
    let h = http.clone();
    let service = hyper::service::service_fn(move |req| {
        let h = h.clone();
        async move { Ok::<_, Infallible>(h.request(req).await) }
    });
    let active = carrier.active_gauge(ends.direction());
    active.inc();
    let served: Result<(), hyper::Error> = match proto {
        Proto::H1 => {
            let c = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(l7.header_timeout_secs))
                .max_buf_size(max_head(l7.max_header_bytes))
                .serve_connection(io, service)
                .with_upgrades();
            tokio::select! {
                r = c => r,
                () = live.revoked() => Ok(()),
            }
        }
        Proto::H2 => {
            let c = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_header_list_size(u32::try_from(l7.max_header_bytes).unwrap_or(u32::MAX))
                .max_concurrent_streams(1000)
                .serve_connection(io, service);
            tokio::select! {
                r = c => r,
                () = live.revoked() => Ok(()),
            }
        }
    };
    // An upgraded exchange goes on after hyper let go of the connection: the connection's
    // budget slot, its revocation and its record last until the exchange ends.
    let mut upgraded =
        std::mem::take(&mut *http.upgraded.lock().unwrap_or_else(|p| p.into_inner()));
    if !upgraded.is_empty() {
        tokio::select! {
            () = async { while upgraded.join_next().await.is_some() {} } => {}
            () = live.revoked() => upgraded.abort_all(),
        }
    }
    active.dec();
    (guard.bytes_toserver, guard.bytes_toclient) = counts.get();
    guard.http = http
        .last
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .map(Box::new);
    guard.add_ids(http.close_ids());
    guard.http_requests = Some(*http.counts.lock().unwrap_or_else(|p| p.into_inner()));
    Outcome::Ended(match (live.revoked_by(), served) {
        (Some(rule), _) => Ending::Revoked(rule),
        (None, Ok(())) => Ending::Closed,
        (None, Err(e)) => Ending::Failed(e.to_string()),
    })
}

/// A server's response, and on HTTP/1 its head as received (with the heads it came from).
type Sent = (Response<Incoming>, Option<(RawHeads, Vec<u8>)>);

/// The largest HTTP/1 head read (hyper's buffer cannot be smaller than 8 KiB).
fn max_head(max_header_bytes: usize) -> usize {
    max_header_bytes.max(8192)
}

/// Hop-by-hop headers (RFC 9110 7.6.1), never forwarded.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers and those `connection` names; keeps `upgrade` (with
/// `connection: upgrade`) when the exchange is an HTTP/1 upgrade.
fn strip_hop_by_hop(h: &mut HeaderMap, upgrading: bool) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .filter(|n| !(upgrading && n == header::UPGRADE))
        .collect();
    for n in named.iter().chain(HOP_BY_HOP.iter()) {
        h.remove(n);
    }
    if upgrading {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        h.remove(header::UPGRADE);
    }
}

/// Whether `req` asks to switch protocols (HTTP/1 `Upgrade`, e.g. WebSocket) or to tunnel
/// (`CONNECT`).
fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.method() == Method::CONNECT
        || (req.version() <= Version::HTTP_11 && req.headers().contains_key(header::UPGRADE))
}

/// Why a request names no single authority.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AuthorityError {
    /// More than one `Host` header, or one holding a list.
    SeveralHosts,
    /// A `Host` header naming another authority than the request target (absolute form,
    /// HTTP/2 `:authority`).
    Conflicting { target: String, host: String },
    /// An authority with user information (`user@host`), which HTTP forbids.
    Userinfo,
    /// A `Host` header that is not a valid authority.
    Malformed,
}

impl std::fmt::Display for AuthorityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthorityError::SeveralHosts => f.write_str("more than one Host header"),
            AuthorityError::Conflicting { target, host } => write!(
                f,
                "the Host header `{host}` names another authority than the request target `{target}`"
            ),
            AuthorityError::Userinfo => f.write_str("user information in the authority"),
            AuthorityError::Malformed => f.write_str("a Host header that is not an authority"),
        }
    }
}

/// The one authority a request names, as it will be forwarded (RFC 9112 3.2, RFC 9113
/// 8.3.1): the target's (absolute form, `CONNECT`, HTTP/2 `:authority`) or else the `Host`
/// header's. What a server could read differently from what the policy decided is refused:
/// several `Host` headers, a `Host` naming another authority than the target, user
/// information.
fn request_authority<B>(req: &Request<B>) -> Result<Option<Authority>, AuthorityError> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => return Err(AuthorityError::SeveralHosts),
        (Some(h), None) => {
            let text = h.to_str().map_err(|_| AuthorityError::Malformed)?;
            if text.contains(',') {
                return Err(AuthorityError::SeveralHosts);
            }
            Some(
                text.parse::<Authority>()
                    .map_err(|_| AuthorityError::Malformed)?,
            )
        }
        _ => None,
    };
    let target = req.uri().authority().cloned();
    for a in target.iter().chain(host.iter()) {
        if a.as_str().contains('@') {
            return Err(AuthorityError::Userinfo);
        }
    }
    match (target, host) {
        (Some(t), Some(h)) => {
            let default_port = match req.uri().scheme_str() {
                Some("https") => 443,
                _ => 80,
            };
            let same = t.host().eq_ignore_ascii_case(h.host())
                && t.port_u16().unwrap_or(default_port) == h.port_u16().unwrap_or(default_port);
            if same {
                Ok(Some(t))
            } else {
                Err(AuthorityError::Conflicting {
                    target: t.to_string(),
                    host: h.to_string(),
                })
            }
        }
        (t, h) => Ok(t.or(h)),
    }
}

/// The host of an authority, as the policy's `hosts` compare it: lower-cased, without port
/// or brackets.
fn host_of(authority: &Authority) -> Option<String> {
    let raw = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    (!raw.is_empty()).then(|| raw.to_ascii_lowercase())
}

/// The request target as the client sent it.
fn target_of<B>(req: &Request<B>) -> String {
    if req.method() == Method::CONNECT {
        return req
            .uri()
            .authority()
            .map_or_else(String::new, |a| a.to_string());
    }
    match req.uri().scheme() {
        // absolute-form (or HTTP/2, whose :scheme and :authority hyper puts in the URI): the
        // path and query are the target for the policy.
        Some(_) => req
            .uri()
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
        None => req.uri().to_string(),
    }
}

fn full(status: StatusCode, text: String, close: bool) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(text))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if close {
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

impl HttpConn {
    /// Decides one request and answers it: a 403 (or 400) from the node, or the server's
    /// response.
    async fn request(&self, mut req: Request<Incoming>) -> Response<Body> {
        // Taken for every request, decided or refused, to stay in step.
        let raw_head = self.raw_requests.as_ref().and_then(RawHeads::next_request);
        let version = match req.version() {
            Version::HTTP_2 => "HTTP/2",
            Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        };
        let target = target_of(&req);
        let authority = request_authority(&req);
        let host = authority
            .as_ref()
            .ok()
            .and_then(|a| a.as_ref().and_then(host_of));
        let http = EveHttp {
            hostname: host.clone(),
            url: target.chars().take(4096).collect(),
            http_method: req.method().as_str().to_owned(),
            protocol: version.to_owned(),
            http_user_agent: req
                .headers()
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.chars().take(512).collect()),
            status: None,
            length: None,
        };
        let mut ev = HttpRecord {
            http,
            normalized_path: None,
            started: std::time::Instant::now(),
        };
        let authority = match authority {
            Ok(a) => a,
            Err(e) => {
                let policy = policy_info(&Plan::refuse(DenyReason::BadRequestTarget, None));
                let text = format!("bad request authority: {e}\n");
                return self
                    .refuse(req, ev, policy, StatusCode::BAD_REQUEST, text)
                    .await;
            }
        };
        // CONNECT names an authority, not a path: decided on `/`, with the host.
        let normalized = if req.method() == Method::CONNECT {
            Ok("/".to_owned())
        } else {
            eastwall_policy::normalize_path(&target)
        };
        let path = match normalized {
            Ok(p) => p,
            Err(e) => {
                let policy = policy_info(&Plan::refuse(DenyReason::BadRequestTarget, None));
                let text = format!("bad request target: {e}\n");
                return self
                    .refuse(req, ev, policy, StatusCode::BAD_REQUEST, text)
                    .await;
            }
        };
        ev.normalized_path = Some(path.clone());
        // Each request is decided with the rules in force and the users' groups as the
        // directory says now.
        let mut ends = self.ends.clone();
        self.pipeline.fill_groups(&mut ends).await;
        let plan = {
            let facts = HttpRequestFacts {
                method: req.method().as_str(),
                host: host.as_deref(),
                path: &path,
                headers: req.headers(),
            };
            self.pipeline.plan(&ends, L7::Http(&facts))
        };
        let policy = policy_info(&plan);
        let src = eve::Endpoint {
            groups: ends.src.groups,
            ..self.src_info.clone()
        };
        let dst = eve::Endpoint {
            groups: ends.dst.groups,
            ..self.dst_info.clone()
        };
        if !plan.allows() {
            let text = if self.pipeline.l7.deny_body_names_rule {
                format!("denied by eastwall policy: rule {}\n", plan.rule_code())
            } else {
                "denied by policy\n".to_owned()
            };
            return self
                .refuse_as(req, ev, policy, StatusCode::FORBIDDEN, text, (src, dst))
                .await;
        }
        let upgrading = is_upgrade(&req);
        let client_upgrade = upgrading.then(|| hyper::upgrade::on(&mut req));
        // The IDS of the allowing rule's profile sees the request before the server does.
        let ids = plan.ids_profile().and_then(|p| self.ids_for(p));
        // An HTTP/2 stream's own inspection ends with the stream.
        let mut close = match (&ids, self.proto) {
            (Some(ids), Proto::H2) => Some(crate::ids::CloseOnDrop {
                ids: ids.clone(),
                telemetry: self.pipeline.telemetry.clone(),
                into: self.stream_ids.clone(),
            }),
            _ => None,
        };
        if let Some(ids) = &ids
            && let Err(b) =
                self.inspect_request(ids, &req, &target, host.as_deref(), raw_head.as_deref())
        {
            return self.blocked(ev, policy, (src, dst), b);
        }
        let req = match &ids {
            Some(ids) => req.map(|b| {
                crate::ids::InspectedBody::new(
                    b,
                    ids.clone(),
                    self.pipeline.telemetry.clone(),
                    true,
                )
                .boxed_unsync()
            }),
            None => req.map(|b| b.map_err(crate::ids::BoxError::from).boxed_unsync()),
        };
        let upstream_req = match self.upstream_request(req, &path, authority, upgrading) {
            Ok(r) => r,
            Err(why) => {
                let r = full(StatusCode::BAD_REQUEST, format!("{why}\n"), false);
                return self.answered(ev, policy, (src, dst), r, false);
            }
        };
        let sent = self.send(upstream_req).await;
        // A request body the IPS stopped: 403, and the connection closes.
        if let Some(b) = ids
            .as_ref()
            .and_then(|i| i.lock().unwrap_or_else(|p| p.into_inner()).blocked_by())
        {
            return self.blocked(ev, policy, (src, dst), b);
        }
        let (mut resp, raw_response) = match sent {
            Ok(r) => r,
            Err(why) => {
                debug!(flow = self.flow_id, %why, "upstream request failed");
                let r = full(StatusCode::BAD_GATEWAY, format!("{why}\n"), false);
                return self.answered(ev, policy, (src, dst), r, false);
            }
        };
        if let Some(ids) = &ids
            && let Err(b) = self.inspect_response(ids, &resp, raw_response.as_ref())
        {
            return self.blocked(ev, policy, (src, dst), b);
        }
        let switched = resp.status() == StatusCode::SWITCHING_PROTOCOLS
            || (ev.http.http_method == "CONNECT" && resp.status().is_success());
        if let (true, Some(client)) = (switched, client_upgrade) {
            let server = hyper::upgrade::on(&mut resp);
            let mut upgraded = self.upgraded.lock().unwrap_or_else(|p| p.into_inner());
            upgraded.spawn(async move {
                if let (Ok(c), Ok(s)) = (client.await, server.await) {
                    let (mut c, mut s) = (TokioIo::new(c), TokioIo::new(s));
                    let _ = tokio::io::copy_bidirectional(&mut c, &mut s).await;
                }
            });
        }
        strip_hop_by_hop(resp.headers_mut(), switched && upgrading);
        let resp = if switched {
            resp.map(Prefetched::none)
        } else {
            let (parts, body) = resp.into_parts();
            Response::from_parts(parts, Prefetched::first_frame(body).await)
        };
        let resp = match &ids {
            Some(ids) => resp.map(|b| {
                crate::ids::InspectedBody::new(
                    b,
                    ids.clone(),
                    self.pipeline.telemetry.clone(),
                    false,
                )
                .closing(close.take())
                .boxed_unsync()
            }),
            None => resp.map(|b| b.map_err(crate::ids::BoxError::from).boxed_unsync()),
        };
        self.answered(ev, policy, (src, dst), resp, false)
    }

    /// The connection's IDS inspection for `profile`, made on first use.
    fn ids_for(&self, profile: &str) -> Option<crate::ids::SharedIds> {
        let mut all = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        if self.proto == Proto::H1
            && let Some((_, ids)) = all.iter().find(|(p, _)| &**p == profile)
        {
            return Some(ids.clone());
        }
        let engines = self.pipeline.ids()?;
        let engine = engines.get(profile)?.clone();
        let app = match self.proto {
            Proto::H1 => eastwall_ids::AppProto::Http1,
            Proto::H2 => eastwall_ids::AppProto::Http2,
        };
        let flow = eastwall_ids::FlowMeta {
            src: self.ends.src.addr,
            dst: self.ends.dst.addr,
        };
        let ids = crate::ids::FlowIds::new(
            engine,
            flow,
            (app, eastwall_ids::Transport::Tcp),
            self.flow_id,
            self.ends_info.clone(),
        );
        // HTTP/2 streams run side by side: each gets its own inspector (closed with it).
        if self.proto == Proto::H1 {
            all.push((engine_name(profile), ids.clone()));
        }
        Some(ids)
    }

    /// Finishes every inspection of the connection; the summary for the flow record.
    fn close_ids(&self) -> Option<IdsInfo> {
        let all = std::mem::take(&mut *self.ids.lock().unwrap_or_else(|p| p.into_inner()));
        let mut info = self
            .stream_ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        for (_, ids) in &all {
            let i = crate::ids::close(&self.pipeline.telemetry, ids);
            match info.as_mut() {
                Some(acc) => acc.merge(i),
                None => info = Some(i),
            }
        }
        info
    }

    /// The request head through the IDS.
    fn inspect_request(
        &self,
        ids: &crate::ids::SharedIds,
        req: &Request<Incoming>,
        target: &str,
        host: Option<&str>,
        raw_head: Option<&[u8]>,
    ) -> Result<(), (u32, String)> {
        let parsed = raw_head.and_then(h1::parse_request);
        let as_sent = in_step(self.raw_requests.as_ref(), parsed.as_ref(), |h| {
            // The policy's target of an absolute-form request is its path.
            h.method == req.method().as_str() && (h.target == target || *req.uri() == h.target)
        });
        let rebuilt;
        let (headers, raw_head) = match as_sent {
            Some(h) => (&h.headers, raw_head),
            None => {
                rebuilt = header_pairs(req.headers());
                (&rebuilt, None)
            }
        };
        let r = eastwall_ids::HttpRequest {
            method: req.method().as_str(),
            uri_raw: target.as_bytes(),
            host: req.uri().authority().map(|_| host.unwrap_or_default()),
            headers,
            version: ids_version(req.version()),
            raw_head,
        };
        let mut f = ids.lock().unwrap_or_else(|p| p.into_inner());
        let v = f.inspector().http_request(&r, crate::ids::now());
        f.apply(&self.pipeline.telemetry, v)
    }

    /// The response head through the IDS.
    fn inspect_response(
        &self,
        ids: &crate::ids::SharedIds,
        resp: &Response<Incoming>,
        raw: Option<&(RawHeads, Vec<u8>)>,
    ) -> Result<(), (u32, String)> {
        let parsed = raw.and_then(|(_, head)| h1::parse_response(head));
        let as_sent = in_step(raw.map(|(h, _)| h), parsed.as_ref(), |h| {
            h.status == resp.status().as_u16()
        });
        let rebuilt;
        let (headers, raw_head, reason) = match as_sent {
            Some(h) => (&h.headers, raw.map(|(_, head)| head.as_slice()), h.reason),
            None => {
                rebuilt = header_pairs(resp.headers());
                let reason = resp.status().canonical_reason().unwrap_or("");
                (&rebuilt, None, reason)
            }
        };
        let r = eastwall_ids::HttpResponse {
            status: resp.status().as_u16(),
            reason,
            headers,
            version: ids_version(resp.version()),
            raw_head,
        };
        let mut f = ids.lock().unwrap_or_else(|p| p.into_inner());
        let v = f.inspector().http_response(&r, crate::ids::now());
        f.apply(&self.pipeline.telemetry, v)
    }

    /// Answers a request the IPS stopped: 403, and an HTTP/1 connection closes.
    fn blocked(
        &self,
        ev: HttpRecord,
        policy: PolicyInfo,
        ends: (eve::Endpoint, eve::Endpoint),
        (sid, msg): (u32, String),
    ) -> Response<Body> {
        let text = format!("blocked by eastwall IDS: signature {sid} ({msg})\n");
        // HTTP/1: what follows on the connection cannot be trusted, close it; an HTTP/2
        // stream ends on its own.
        let r = full(StatusCode::FORBIDDEN, text, self.proto == Proto::H1);
        self.answered(ev, policy, ends, r, true)
    }

    /// Refuses a request the node could not decide on (bad target).
    async fn refuse(
        &self,
        req: Request<Incoming>,
        ev: HttpRecord,
        policy: PolicyInfo,
        status: StatusCode,
        text: String,
    ) -> Response<Body> {
        let ends = (self.src_info.clone(), self.dst_info.clone());
        self.refuse_as(req, ev, policy, status, text, ends).await
    }

    /// Answers a request with the node's own refusal; the request's body (up to
    /// [`DRAIN_LIMIT`]) is read first so the connection can carry the next request.
    async fn refuse_as(
        &self,
        req: Request<Incoming>,
        ev: HttpRecord,
        policy: PolicyInfo,
        status: StatusCode,
        text: String,
        ends: (eve::Endpoint, eve::Endpoint),
    ) -> Response<Body> {
        let drained = drain(req.into_body()).await;
        let close = !drained && self.proto == Proto::H1;
        self.answered(ev, policy, ends, full(status, text, close), true)
    }

    /// Counts and records a request with the response it gets, and passes the response on.
    fn answered(
        &self,
        mut ev: HttpRecord,
        policy: PolicyInfo,
        (src, dest): (eve::Endpoint, eve::Endpoint),
        resp: Response<Body>,
        denied: bool,
    ) -> Response<Body> {
        ev.http.status = Some(resp.status().as_u16());
        ev.http.length = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        {
            let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
            c.requests += 1;
            c.denied += u64::from(denied);
        }
        let dir = self.ends.direction();
        self.pipeline
            .telemetry
            .metrics
            .http_request_seconds
            .get_or_create(&crate::telemetry::metrics::DirLabels {
                direction: dir.as_str(),
            })
            .observe(ev.started.elapsed().as_secs_f64());
        self.pipeline
            .telemetry
            .metrics
            .http_requests
            .get_or_create(&crate::telemetry::metrics::HttpLabels {
                direction: dir.as_str(),
                verdict: if denied { "deny" } else { "allow" },
            })
            .inc();
        let event = HttpEvent {
            timestamp: eve::timestamp(SystemTime::now()),
            host: self.pipeline.here.node.clone(),
            flow_id: self.flow_id,
            event_type: "http",
            src_ip: self.ends.src.addr.ip(),
            src_port: self.ends.src.addr.port(),
            dest_ip: self.ends.dst.addr.ip(),
            dest_port: self.ends.dst.addr.port(),
            proto: "TCP",
            app_proto: self.proto.app_proto(),
            http: ev.http.clone(),
            eastwall: L7Decision {
                node: self.pipeline.here.node.clone(),
                direction: dir,
                src,
                dest,
                policy,
                normalized_path: ev.normalized_path.clone(),
            },
        };
        self.pipeline.telemetry.flows.event(&event);
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(ev);
        resp
    }

    /// The request as it goes to the server: normalized path (query kept), no hop-by-hop
    /// headers, the upstream protocol's form of the target.
    fn upstream_request(
        &self,
        req: Request<Body>,
        path: &str,
        authority: Option<Authority>,
        upgrading: bool,
    ) -> Result<Request<Body>, String> {
        let (mut parts, body) = req.into_parts();
        let path_and_query = if parts.method == Method::CONNECT {
            None
        } else {
            Some(match parts.uri.query() {
                Some(q) => format!("{path}?{q}"),
                None => path.to_owned(),
            })
        };
        // The authority that was decided is the one the server gets: the only `Host` of an
        // HTTP/1 request, the `:authority` (and no `host` header) of an HTTP/2 one.
        let authority = authority.map_or_else(|| self.ends.dst.addr.to_string(), |a| a.to_string());
        parts.headers.remove(header::HOST);
        if self.proto == Proto::H1 {
            let value =
                HeaderValue::from_str(&authority).map_err(|e| format!("bad authority: {e}"))?;
            parts.headers.insert(header::HOST, value);
        }
        parts.uri = match (self.proto, path_and_query) {
            (_, None) => authority
                .parse::<Uri>()
                .map_err(|e| format!("bad CONNECT authority: {e}"))?,
            (Proto::H1, Some(pq)) => pq.parse().map_err(|e| format!("bad target: {e}"))?,
            (Proto::H2, Some(pq)) => Uri::builder()
                .scheme(parts.uri.scheme_str().unwrap_or("http"))
                .authority(authority)
                .path_and_query(pq)
                .build()
                .map_err(|e| format!("bad target: {e}"))?,
        };
        parts.version = match self.proto {
            Proto::H1 => Version::HTTP_11,
            Proto::H2 => Version::HTTP_2,
        };
        strip_hop_by_hop(&mut parts.headers, upgrading);
        Ok(Request::from_parts(parts, body))
    }

    /// Sends a request to the server, opening the connection first if there is none (or it
    /// closed).
    /// HTTP/1: with the response's head as received, when the IDS may read it.
    async fn send(&self, req: Request<Body>) -> Result<Sent, String> {
        let mut up = self.upstream.lock().await;
        let usable = match up.as_ref() {
            Some(Upstream::H1(s, _)) => !s.is_closed(),
            Some(Upstream::H2(s)) => !s.is_closed(),
            None => false,
        };
        if !usable {
            *up = Some(self.connect().await?);
        }
        match up.as_mut() {
            Some(Upstream::H1(s, raw)) => {
                s.ready().await.map_err(|e| format!("upstream: {e}"))?;
                let raw = raw.clone();
                if let Some(r) = &raw {
                    r.expect_response_to(h1::Method::of(req.method().as_str().as_bytes()));
                }
                let sent = s.send_request(req);
                // HTTP/1 carries one exchange at a time; the next request waits in `ready`.
                drop(up);
                let resp = sent.await.map_err(|e| format!("upstream: {e}"))?;
                let head = raw.and_then(|r| r.next_response().map(|h| (r, h)));
                Ok((resp, head))
            }
            Some(Upstream::H2(s)) => {
                let mut s = s.clone();
                drop(up);
                s.ready().await.map_err(|e| format!("upstream: {e}"))?;
                let resp = s
                    .send_request(req)
                    .await
                    .map_err(|e| format!("upstream: {e}"))?;
                Ok((resp, None))
            }
            None => Err("no upstream connection".to_owned()),
        }
    }

    /// Opens the connection to the server from the client's address.
    async fn connect(&self) -> Result<Upstream, String> {
        let server = self.ends.dst.addr;
        let tcp = self
            .pipeline
            .carrier
            .connect(self.ends.src.addr.ip(), server, self.ends.direction())
            .await
            .map_err(|e| format!("connecting to {server}: {e}"))?;
        match self.proto {
            Proto::H1 => {
                let raw = self.raw_requests.as_ref().map(|_| RawHeads::default());
                let max = max_head(self.pipeline.l7.max_header_bytes);
                let tap = raw
                    .as_ref()
                    .map(|h| HeadTap::new(Role::Response, max, h.clone()));
                // The server's side: nothing read ahead; its bytes are counted on the client's.
                let io =
                    TokioIo::new(ClientIo::new(Bytes::new(), tcp, &Counts::default()).tapped(tap));
                let (send, conn) = hyper::client::conn::http1::Builder::new()
                    .handshake(io)
                    .await
                    .map_err(|e| format!("HTTP/1 to the server: {e}"))?;
                tokio::spawn(async move {
                    let _ = conn.with_upgrades().await;
                });
                Ok(Upstream::H1(send, raw))
            }
            Proto::H2 => {
                let io = TokioIo::new(tcp);
                let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .handshake(io)
                    .await
                    .map_err(|e| format!("HTTP/2 to the server: {e}"))?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                Ok(Upstream::H2(send))
            }
        }
    }
}

/// How long a response waits for the first bytes of its small body, so that head and body
/// leave together.
const FIRST_FRAME_WAIT: Duration = Duration::from_millis(1);

/// The largest body (by `Content-Length`) whose first bytes a response waits for.
const FIRST_FRAME_MAX: u64 = 64 * 1024;

/// A response body whose first frame may have been read already.
///
/// hyper writes a response's head as soon as the body has no bytes ready, and the upstream
/// connection hands its body over only when asked: without waiting, head and body of even a
/// tiny response went out in two writes (two tunnel frames, two wake-ups of the client).
pub(crate) struct Prefetched<B: hyper::body::Body> {
    first: Option<Result<hyper::body::Frame<Bytes>, B::Error>>,
    inner: B,
}

impl<B> Prefetched<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    /// `inner`, nothing read ahead.
    fn none(inner: B) -> Self {
        Prefetched { first: None, inner }
    }

    /// `inner`, with its first frame (or the error in its place) read ahead when the body is
    /// small, of known length, and that frame arrives within [`FIRST_FRAME_WAIT`].
    async fn first_frame(mut inner: B) -> Self {
        let small = inner
            .size_hint()
            .exact()
            .is_some_and(|n| n > 0 && n <= FIRST_FRAME_MAX);
        if !small || inner.is_end_stream() {
            return Prefetched::none(inner);
        }
        // `frame()` only polls the body: cancelled by the timeout, it has taken nothing.
        let first = tokio::time::timeout(FIRST_FRAME_WAIT, inner.frame())
            .await
            .ok()
            .flatten();
        Prefetched { first, inner }
    }
}

impl<B> hyper::body::Body for Prefetched<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, B::Error>>> {
        if let Some(f) = self.first.take() {
            return Poll::Ready(Some(f));
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        let inner = self.inner.size_hint();
        let n = self
            .first
            .as_ref()
            .and_then(|f| f.as_ref().ok()?.data_ref())
            .map_or(0, |d| d.len() as u64);
        // Upper first: a lower bound above the upper one panics.
        let mut h = hyper::body::SizeHint::new();
        if let Some(u) = inner.upper() {
            h.set_upper(u.saturating_add(n));
        }
        h.set_lower(inner.lower().saturating_add(n));
        h
    }
}

/// Header fields as the IDS takes them: name and value, in order.
fn header_pairs(h: &HeaderMap) -> Vec<(&str, &[u8])> {
    h.iter().map(|(n, v)| (n.as_str(), v.as_bytes())).collect()
}

/// The IDS's name of an HTTP version.
fn ids_version(v: Version) -> eastwall_ids::HttpVersion {
    match v {
        Version::HTTP_2 => eastwall_ids::HttpVersion::Http2,
        Version::HTTP_10 | Version::HTTP_09 => eastwall_ids::HttpVersion::Http10,
        _ => eastwall_ids::HttpVersion::Http11,
    }
}

fn engine_name(profile: &str) -> Arc<str> {
    Arc::from(profile)
}

/// Reads a request body to its end if it is small; whether it was.
async fn drain(body: Incoming) -> bool {
    let limited = http_body_util::Limited::new(body, DRAIN_LIMIT);
    matches!(
        tokio::time::timeout(Duration::from_secs(2), limited.collect()).await,
        Ok(Ok(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::body::Body as _;
    use std::future::Future as _;

    /// A body (of known length, or not) whose bytes arrive when the test sends them.
    struct Late {
        len: Option<u64>,
        rx: Option<tokio::sync::oneshot::Receiver<Bytes>>,
    }

    impl hyper::body::Body for Late {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
            let Some(rx) = self.rx.as_mut() else {
                return Poll::Ready(None);
            };
            let got = std::task::ready!(Pin::new(rx).poll(cx));
            self.rx = None;
            Poll::Ready(got.ok().map(|b| Ok(hyper::body::Frame::data(b))))
        }
        fn is_end_stream(&self) -> bool {
            self.rx.is_none()
        }
        fn size_hint(&self) -> hyper::body::SizeHint {
            match (&self.rx, self.len) {
                (None, _) => hyper::body::SizeHint::with_exact(0),
                (Some(_), Some(n)) => hyper::body::SizeHint::with_exact(n),
                (Some(_), None) => hyper::body::SizeHint::default(),
            }
        }
    }

    #[tokio::test]
    async fn a_small_body_that_is_ready_is_read_ahead_and_delivered_whole() {
        let p = Prefetched::first_frame(Full::new(Bytes::from_static(b"hello"))).await;
        assert!(p.first.is_some(), "read ahead");
        assert_eq!(p.size_hint().exact(), Some(5));
        assert!(!p.is_end_stream());
        let got = p.collect().await.unwrap().to_bytes();
        assert_eq!(&got[..], b"hello");
    }

    /// A body of 5 bytes that fails at once, and says so once (then it has ended).
    struct Broken(bool);

    impl hyper::body::Body for Broken {
        type Data = Bytes;
        type Error = &'static str;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, &'static str>>> {
            let first = !std::mem::replace(&mut self.0, true);
            Poll::Ready(first.then_some(Err("upstream broke")))
        }
        fn size_hint(&self) -> hyper::body::SizeHint {
            hyper::body::SizeHint::with_exact(5)
        }
    }

    #[tokio::test]
    async fn an_error_read_ahead_reaches_the_reader() {
        let p = Prefetched::first_frame(Broken(false)).await;
        assert_eq!(p.collect().await.err(), Some("upstream broke"));
    }

    #[tokio::test]
    async fn late_large_and_unsized_bodies_are_not_waited_for_and_lose_nothing() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let t = std::time::Instant::now();
        let p = Prefetched::first_frame(Late {
            len: Some(5),
            rx: Some(rx),
        })
        .await;
        assert!(p.first.is_none(), "the bytes were not there");
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "waited {:?}",
            t.elapsed()
        );
        tx.send(Bytes::from_static(b"later")).unwrap();
        assert_eq!(&p.collect().await.unwrap().to_bytes()[..], b"later");

        let big = Bytes::from(vec![7u8; 100 * 1024]);
        let p = Prefetched::first_frame(Full::new(big.clone())).await;
        assert!(p.first.is_none(), "over the size limit");
        assert_eq!(p.collect().await.unwrap().to_bytes(), big);

        let (tx, rx) = tokio::sync::oneshot::channel();
        tx.send(Bytes::from_static(b"chunk")).unwrap();
        let p = Prefetched::first_frame(Late {
            len: None,
            rx: Some(rx),
        })
        .await;
        assert!(p.first.is_none(), "length unknown");
        assert_eq!(&p.collect().await.unwrap().to_bytes()[..], b"chunk");
    }

    fn req(uri: &str, host: Option<&str>) -> Request<()> {
        let mut b = Request::builder().uri(uri);
        if let Some(h) = host {
            b = b.header("host", h);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn one_authority_per_request() {
        let host = |uri: &str, hosts: &[&str]| {
            let mut b = Request::builder().uri(uri);
            for h in hosts {
                b = b.header("host", *h);
            }
            let r = b.body(()).unwrap();
            request_authority(&r).map(|a| a.as_ref().and_then(host_of))
        };
        let ok = |h: &str| Ok(Some(h.to_owned()));
        use AuthorityError::*;
        let conflict = |t: &str, h: &str| {
            Err(Conflicting {
                target: t.into(),
                host: h.into(),
            })
        };
        type Case<'a> = (
            &'a str,
            &'a [&'a str],
            Result<Option<String>, AuthorityError>,
        );
        #[rustfmt::skip]
        let cases: &[Case<'_>] = &[
            ("/", &["Api.Example:8080"], ok("api.example")),
            ("/", &["[fd00::1]:80"], ok("fd00::1")),
            ("/", &[], Ok(None)),
            // Absolute form: the target's authority, and a Host must name the same.
            ("http://x.example/a", &[], ok("x.example")),
            ("http://x.example/a", &["X.Example"], ok("x.example")),
            ("http://x.example/a", &["x.example:80"], ok("x.example")),
            ("http://x.example/a", &["evil.example"], conflict("x.example", "evil.example")),
            ("http://x.example:8080/a", &["x.example"], conflict("x.example:8080", "x.example")),
            // Several Host headers, or a list in one, or user information: refused.
            ("/", &["a.example", "a.example"], Err(SeveralHosts)),
            ("/", &["a.example, b.example"], Err(SeveralHosts)),
            ("http://u@x.example/a", &[], Err(Userinfo)),
            ("/", &["u@x.example"], Err(Userinfo)),
            ("/", &["a b"], Err(Malformed)),
        ];
        for (uri, hosts, want) in cases {
            assert_eq!(&host(uri, hosts), want, "{uri} {hosts:?}");
        }
    }

    #[test]
    fn targets_as_sent() {
        assert_eq!(target_of(&req("/a/../b?q=1", None)), "/a/../b?q=1");
        assert_eq!(target_of(&req("http://x/a?b", None)), "/a?b");
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        let mut up = h.clone();
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
        up.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        strip_hop_by_hop(&mut up, true);
        assert_eq!(up.get(header::UPGRADE).unwrap(), "websocket");
        assert_eq!(up.get(header::CONNECTION).unwrap(), "upgrade");
    }
}
