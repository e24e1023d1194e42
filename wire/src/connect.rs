//! The HTTP/2 transport's stream request and response: HBONE-shaped HTTP messages carrying
//! the same facts as the QUIC transport's binary [`header`](crate::header). Pure, like the
//! header codec; see `docs/TUNNEL.md`.
//!
//! ```text
//! request   :method CONNECT
//!           :authority <original destination>        10.77.2.3:5432 | [fd00::3]:5432
//!           forwarded: for="<original source>"       RFC 7239: for="10.77.1.2:40312"
//!           traceparent: <W3C trace context>         optional
//! UDP       :protocol connect-udp                    extended CONNECT (RFC 8441, RFC 9298)
//!           :path /.well-known/masque/udp/<ip>/<port>/   the same destination (`:` as %3A)
//!           capsule-protocol: ?1                     datagrams in capsules (wire::capsule)
//! response  :status 200                              connected, the workload's bytes follow
//!           :status 4xx/5xx                          refused, with
//!           eastwall-status: denied | bad-header | unknown-destination | identity-mismatch | unreachable
//!           eastwall-reason: <why, visible ASCII>
//! ```

use std::net::SocketAddr;

use http::{HeaderValue, Method, StatusCode};

use crate::header::{Response, Status, StreamHeader, StreamKind};

/// The `:protocol` of a CONNECT-UDP request (RFC 9298).
pub const CONNECT_UDP: &str = "connect-udp";

/// Header naming the refusal exactly (the HTTP status alone maps several to 403).
pub const STATUS_HEADER: &str = "eastwall-status";
/// Header with the human-readable reason of a refusal.
pub const REASON_HEADER: &str = "eastwall-reason";
/// Longest reason sent, in bytes.
const MAX_REASON: usize = 1024;
/// Longest `forwarded` or `traceparent` value accepted.
const MAX_FIELD: usize = 512;

/// Why a CONNECT request was refused before any check of identity or policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// Not a CONNECT request.
    #[error("tunnel streams must be CONNECT requests, not {0}")]
    Method(String),
    /// The `:authority` is not an IP address and port.
    #[error("CONNECT authority `{0}` is not an IP address and port")]
    Authority(String),
    /// The `forwarded` header is missing, repeated, or has no usable `for=` address and port.
    #[error(
        "CONNECT request lacks a `forwarded: for=\"ADDRESS:PORT\"` header for the original source ({0})"
    )]
    Forwarded(&'static str),
    /// The trace context is not visible ASCII or too long.
    #[error("malformed traceparent header")]
    Trace,
    /// An extended CONNECT for another protocol than UDP.
    #[error("unsupported CONNECT protocol `{0}` (only connect-udp)")]
    Protocol(String),
    /// A CONNECT-UDP request whose path does not name the same destination.
    #[error("CONNECT-UDP path `{0}` does not name the destination of the authority")]
    UdpTarget(String),
}

/// The CONNECT-UDP path (RFC 9298's default template) of `dst`: the address with `:`
/// percent-encoded, as RFC 6570 expands it.
pub fn udp_path(dst: SocketAddr) -> String {
    let host = dst.ip().to_string().replace(':', "%3A");
    format!("/.well-known/masque/udp/{host}/{}/", dst.port())
}

/// Formats an address as an authority (`10.0.0.1:80`, `[fd00::1]:80`).
fn authority(a: SocketAddr) -> String {
    // SocketAddr's Display brackets IPv6 and drops IPv4-mapped forms as written.
    a.to_string()
}

/// The CONNECT request the source sends for `h`.
pub fn request(h: &StreamHeader) -> http::Request<()> {
    let mut req = http::Request::new(());
    *req.method_mut() = Method::CONNECT;
    let uri = match h.kind {
        // An IP:port authority always parses as a URI.
        StreamKind::Tcp => authority(h.dst).parse().map_err(http::Error::from),
        StreamKind::Udp => http::Uri::builder()
            .scheme("https")
            .authority(authority(h.dst))
            .path_and_query(udp_path(h.dst))
            .build(),
    };
    if let Ok(uri) = uri {
        *req.uri_mut() = uri;
    }
    let headers = req.headers_mut();
    if h.kind == StreamKind::Udp {
        headers.insert("capsule-protocol", HeaderValue::from_static("?1"));
    }
    if let Ok(v) = HeaderValue::from_str(&format!("for=\"{}\"", authority(h.src))) {
        headers.insert(http::header::FORWARDED, v);
    }
    if let Some(t) = &h.trace
        && let Ok(v) = HeaderValue::from_str(t)
    {
        headers.insert("traceparent", v);
    }
    req
}

/// Reads the stream header out of a CONNECT request; `protocol` is its `:protocol`
/// (extended CONNECT), `None` for a plain CONNECT (TCP).
pub fn parse_request(
    req: &http::request::Parts,
    protocol: Option<&str>,
) -> Result<StreamHeader, ConnectError> {
    if req.method != Method::CONNECT {
        return Err(ConnectError::Method(
            req.method.as_str().chars().take(32).collect(),
        ));
    }
    let kind = match protocol {
        None => StreamKind::Tcp,
        Some(CONNECT_UDP) => StreamKind::Udp,
        Some(p) => return Err(ConnectError::Protocol(p.chars().take(64).collect())),
    };
    let auth = req.uri.authority().map(|a| a.as_str()).unwrap_or_default();
    let dst: SocketAddr = auth
        .parse()
        .map_err(|_| ConnectError::Authority(auth.chars().take(300).collect()))?;
    if kind == StreamKind::Udp {
        let path = req.uri.path();
        if !path.eq_ignore_ascii_case(&udp_path(dst)) {
            return Err(ConnectError::UdpTarget(path.chars().take(300).collect()));
        }
    }
    let mut fwd = req.headers.get_all(http::header::FORWARDED).iter();
    let f = fwd.next().ok_or(ConnectError::Forwarded("missing"))?;
    if fwd.next().is_some() {
        return Err(ConnectError::Forwarded("repeated"));
    }
    let src = parse_forwarded_for(f.as_bytes())?;
    let trace = match req.headers.get("traceparent") {
        None => None,
        Some(v) if v.len() <= MAX_FIELD => {
            Some(v.to_str().map_err(|_| ConnectError::Trace)?.to_owned())
        }
        Some(_) => return Err(ConnectError::Trace),
    };
    Ok(StreamHeader {
        dst,
        src,
        trace,
        kind,
    })
}

/// The `for=` node of a single-element `forwarded` value, as an address and port.
fn parse_forwarded_for(v: &[u8]) -> Result<SocketAddr, ConnectError> {
    if v.len() > MAX_FIELD {
        return Err(ConnectError::Forwarded("too long"));
    }
    let text = std::str::from_utf8(v).map_err(|_| ConnectError::Forwarded("not ASCII"))?;
    if text.contains(',') {
        return Err(ConnectError::Forwarded("more than one element"));
    }
    let mut found = None;
    for pair in text.split(';') {
        let Some((k, val)) = pair.trim().split_once('=') else {
            return Err(ConnectError::Forwarded("malformed pair"));
        };
        if k.trim().eq_ignore_ascii_case("for") {
            if found.is_some() {
                return Err(ConnectError::Forwarded("repeated for="));
            }
            let val = val.trim();
            let val = val
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(val);
            found = Some(
                val.parse::<SocketAddr>()
                    .map_err(|_| ConnectError::Forwarded("for= is not ADDRESS:PORT"))?,
            );
        }
    }
    found.ok_or(ConnectError::Forwarded("no for="))
}

/// The HTTP status of a tunnel [`Status`].
fn http_status(s: Status) -> StatusCode {
    match s {
        Status::Connected => StatusCode::OK,
        Status::Denied | Status::IdentityMismatch => StatusCode::FORBIDDEN,
        Status::BadHeader => StatusCode::BAD_REQUEST,
        Status::UnknownDestination => StatusCode::NOT_FOUND,
        Status::Unreachable | Status::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// Keeps what a header value may hold: visible ASCII and spaces, cut to [`MAX_REASON`].
fn header_text(s: &str) -> HeaderValue {
    let clean: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(MAX_REASON)
        .collect();
    HeaderValue::from_str(clean.trim()).unwrap_or(HeaderValue::from_static(""))
}

/// The destination's answer as an HTTP response.
pub fn response(r: &Response) -> http::Response<()> {
    let mut resp = http::Response::new(());
    *resp.status_mut() = http_status(r.status);
    if r.status != Status::Connected {
        let h = resp.headers_mut();
        h.insert(STATUS_HEADER, HeaderValue::from_static(r.status.as_str()));
        h.insert(REASON_HEADER, header_text(&r.reason));
    }
    resp
}

/// Reads the destination's answer from an HTTP response.
pub fn parse_response(resp: &http::response::Parts) -> Response {
    let reason = resp
        .headers
        .get(REASON_HEADER)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let named = resp
        .headers
        .get(STATUS_HEADER)
        .and_then(|v| Status::from_name(v.to_str().ok()?));
    let status = match (resp.status, named) {
        (StatusCode::OK, _) => Status::Connected,
        // A 2xx other than 200 is not what eastwall sends; never treat it as connected.
        (_, Some(s)) if s != Status::Connected => s,
        (StatusCode::FORBIDDEN, _) => Status::Denied,
        (StatusCode::NOT_FOUND, _) => Status::UnknownDestination,
        (s, _) if s.is_server_error() => Status::Unreachable,
        _ => Status::BadHeader,
    };
    let reason = if reason.is_empty() && status != Status::Connected {
        format!("HTTP {}", resp.status)
    } else {
        reason
    };
    Response { status, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(req: http::Request<()>) -> http::request::Parts {
        req.into_parts().0
    }

    #[test]
    fn request_round_trips_for_both_families() {
        for (dst, src, trace) in [
            ("10.77.2.3:5432", "10.77.1.2:40312", None),
            (
                "[fd00::3]:443",
                "[fd00::1:2]:51000",
                Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned()),
            ),
        ] {
            let h = StreamHeader {
                dst: dst.parse().unwrap(),
                src: src.parse().unwrap(),
                trace,
                kind: Default::default(),
            };
            let req = request(&h);
            assert_eq!(req.method(), Method::CONNECT);
            assert_eq!(req.uri().to_string(), dst);
            assert_eq!(parse_request(&parts(req), None).unwrap(), h);
        }
    }

    fn connect(auth: &str, fwd: &[&str]) -> http::request::Parts {
        let mut b = http::Request::builder().method(Method::CONNECT).uri(auth);
        for f in fwd {
            b = b.header("forwarded", *f);
        }
        parts(b.body(()).unwrap())
    }

    #[test]
    fn malformed_requests_are_refused_with_a_reason() {
        let get = parts(
            http::Request::builder()
                .uri("http://10.0.0.1/")
                .body(())
                .unwrap(),
        );
        assert!(matches!(
            parse_request(&get, None),
            Err(ConnectError::Method(_))
        ));
        for auth in ["db.example:5432", "10.0.0.1", "10.0.0.1:99999"] {
            assert!(
                matches!(
                    parse_request(&connect(auth, &["for=\"10.0.0.2:1\""]), None),
                    Err(ConnectError::Authority(_))
                ),
                "{auth}"
            );
        }
        for fwd in [
            &[][..],
            &["for=\"10.0.0.2:1\"", "for=\"10.0.0.3:1\""][..],
            &["for=10.0.0.2"][..],
            &["for=\"10.0.0.2:1\", for=\"10.0.0.3:2\""][..],
            &["by=\"10.0.0.2:1\""][..],
            &["for=\"10.0.0.2:1\";for=\"10.0.0.3:1\""][..],
            &["garbage"][..],
        ] {
            assert!(
                matches!(
                    parse_request(&connect("10.0.0.1:80", fwd), None),
                    Err(ConnectError::Forwarded(_))
                ),
                "{fwd:?}"
            );
        }
        // Other parameters beside for= are fine; unquoted IPv4 with port too.
        let ok = parse_request(
            &connect("10.0.0.1:80", &["proto=http;for=10.0.0.2:7"]),
            None,
        )
        .unwrap();
        assert_eq!(ok.src, "10.0.0.2:7".parse().unwrap());
    }

    #[test]
    fn responses_round_trip_every_status() {
        for status in [
            Status::Connected,
            Status::Denied,
            Status::BadHeader,
            Status::UnknownDestination,
            Status::IdentityMismatch,
            Status::Unreachable,
            Status::Overloaded,
        ] {
            let r = Response {
                status,
                reason: if status == Status::Connected {
                    String::new()
                } else {
                    "denied by rule x\n\u{1b}[31m".into()
                },
            };
            let back = parse_response(&response(&r).into_parts().0);
            assert_eq!(back.status, status);
            if status != Status::Connected {
                assert_eq!(back.reason, "denied by rule x??[31m");
            }
        }
    }

    #[test]
    fn foreign_responses_are_never_connected() {
        let resp = |code: u16, named: Option<&str>| {
            let mut b = http::Response::builder().status(code);
            if let Some(n) = named {
                b = b.header(STATUS_HEADER, n);
            }
            parse_response(&b.body(()).unwrap().into_parts().0)
        };
        assert_eq!(resp(204, None).status, Status::BadHeader);
        assert_eq!(resp(204, Some("connected")).status, Status::BadHeader);
        assert_eq!(resp(403, None).status, Status::Denied);
        assert_eq!(resp(502, None).status, Status::Unreachable);
        assert_eq!(resp(403, Some("nonsense")).status, Status::Denied);
        assert_eq!(resp(403, None).reason, "HTTP 403 Forbidden");
    }

    #[test]
    fn udp_requests_name_their_target_twice_and_round_trip() {
        for (dst, path) in [
            ("10.77.2.3:53", "/.well-known/masque/udp/10.77.2.3/53/"),
            ("[fd00::3]:514", "/.well-known/masque/udp/fd00%3A%3A3/514/"),
        ] {
            let h = StreamHeader {
                dst: dst.parse().unwrap(),
                src: "10.77.1.2:40312".parse().unwrap(),
                trace: None,
                kind: StreamKind::Udp,
            };
            let req = request(&h);
            assert_eq!(req.uri().path(), path);
            assert_eq!(req.headers()["capsule-protocol"], "?1");
            let p = parts(req);
            assert_eq!(parse_request(&p, Some(CONNECT_UDP)).unwrap(), h);
            // The same request without `:protocol` is a TCP CONNECT to the same place.
            assert_eq!(parse_request(&p, None).unwrap().kind, StreamKind::Tcp);
            assert!(matches!(
                parse_request(&p, Some("websocket")),
                Err(ConnectError::Protocol(_))
            ));
        }
        // A path naming another target than the authority is refused.
        let h = StreamHeader {
            dst: "10.77.2.3:53".parse().unwrap(),
            src: "10.77.1.2:40312".parse().unwrap(),
            trace: None,
            kind: StreamKind::Udp,
        };
        let mut p = parts(request(&h));
        p.uri = "https://10.77.2.3:53/.well-known/masque/udp/10.77.2.4/53/"
            .parse()
            .unwrap();
        assert!(matches!(
            parse_request(&p, Some(CONNECT_UDP)),
            Err(ConnectError::UdpTarget(_))
        ));
    }
}
