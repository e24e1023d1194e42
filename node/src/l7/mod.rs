//! L7 decisions at the deciding node, for connections that rules with L7 conditions apply to
//! (the connection-time decision said `needs_l7`):
//!
//! 1. sniff (`eastwall_wire::sniff`) the client's first bytes (waiting at most `l7.firstBytesMs` for
//!    them: server-first protocols send nothing): HTTP/1, HTTP/2, TLS, or opaque;
//! 2. HTTP: [`http`] serves the connection with hyper, decides every request (every HTTP/2
//!    stream) on its own, answers denied ones with 403 and forwards the others to the server
//!    over a connection of the same protocol;
//! 3. TLS: decides once on the ClientHello's SNI, without decrypting; opaque: decides once,
//!    with no L7 facts (L7 allow rules do not match it, L7 deny rules do). Allowed, the bytes
//!    are relayed as at L4, the sniffed ones first.
//!
//! DNS ([`dns`]): a UDP session is decided datagram by datagram, a stream that starts like DNS
//! over TCP message by message; each query on its name.
//!
//! Where the client's bytes come from is a [`Downstream`]: a captured TCP connection (refused
//! with a reset) or a tunnel stream at the destination node (refused with a tunnel answer).
//! Each decision is `conn::plan` with the L7 facts; what is allowed is carried by
//! `conn::carry`, or forwarded request by request by [`http`].

pub(crate) mod dns;
pub(crate) mod http;
pub(crate) mod io;

use std::io as stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use eastwall_policy::L7;
use eastwall_wire::eve::EveTls;
use eastwall_wire::header::Status;
use eastwall_wire::sniff::{Sniff, Sniffed, Sniffer};

use crate::config::L7Spec;
use crate::conn::carry::{Downstream, Prelude};
use crate::conn::record::FlowGuard;
use crate::conn::{Ending, Ends, Outcome, Pipeline};

/// Sniffs, decides and serves one connection whose rules need L7 facts; fills the record
/// (application protocol, TLS or HTTP details, the decision for TLS and opaque streams) and
/// says how the connection ended.
pub(crate) async fn serve<D: Downstream>(
    mut down: D,
    early: Bytes,
    ends: &Ends,
    pipeline: &Arc<Pipeline>,
    guard: &mut FlowGuard,
) -> Outcome {
    let (sniffed, prefix) = match sniff(&mut down, early, &pipeline.l7).await {
        Ok(s) => s,
        Err(e) => {
            down.refuse(Status::BadHeader, &e.to_string()).await;
            return Outcome::Ended(Ending::Failed(format!("reading the first bytes: {e}")));
        }
    };
    let (facts_sni, tls) = match sniffed {
        Sniffed::Http1 | Sniffed::Http2 => {
            let proto = if sniffed == Sniffed::Http2 {
                http::Proto::H2
            } else {
                http::Proto::H1
            };
            guard.app_proto = Some(proto.app_proto());
            return match down.accept_io().await {
                Ok(io) => http::serve(io, prefix, proto, ends, pipeline, guard).await,
                Err(e) => Outcome::Ended(Ending::Failed(e.to_string())),
            };
        }
        Sniffed::Tls(hello) => {
            guard.app_proto = Some("tls");
            guard.tls = Some(Box::new(EveTls {
                sni: hello.sni.clone(),
                version: Some(tls_version(hello.max_version())),
                client_alpns: hello.alpn.clone(),
            }));
            (hello.sni, true)
        }
        Sniffed::TlsUnreadable(e) => {
            guard.app_proto = Some("tls");
            guard.tls = Some(Box::new(EveTls {
                sni: None,
                version: Some("UNDETERMINED".into()),
                client_alpns: Vec::new(),
            }));
            guard.error = Some(format!("unreadable ClientHello: {e}"));
            (None, true)
        }
        Sniffed::Opaque if eastwall_wire::dns::starts_like_tcp_query(&prefix) => {
            guard.app_proto = Some("dns");
            return dns::serve_tcp(down, prefix, ends, pipeline, guard).await;
        }
        Sniffed::Opaque => {
            guard.app_proto = Some("failed");
            (None, false)
        }
    };
    let facts = if tls {
        L7::Tls {
            sni: facts_sni.as_deref(),
        }
    } else {
        L7::Opaque
    };
    // TLS and opaque streams are decided once, on what the first bytes said.
    let mut decided_ends = ends.clone();
    pipeline.fill_groups(&mut decided_ends).await;
    let plan = pipeline.plan(&decided_ends, facts);
    guard.decided(&plan);
    if let Some(reason) = plan.denial() {
        down.refuse(reason.tunnel_status(), &plan.refusal_words())
            .await;
        return Outcome::Refused(reason.clone());
    }
    let prelude = Prelude { bytes: prefix, tls };
    let profile = plan.ids_profile();
    pipeline
        .carrier
        .direct(down, ends, profile, prelude, true, guard)
        .await
}

/// EVE's name of a TLS version number.
fn tls_version(v: u16) -> String {
    match v {
        0x0304 => "TLS 1.3".into(),
        0x0303 => "TLS 1.2".into(),
        0x0302 => "TLS 1.1".into(),
        0x0301 => "TLS 1.0".into(),
        0x0300 => "SSLv3".into(),
        _ => "UNDETERMINED".into(),
    }
}

/// Reads the client's first bytes until the protocol is known: at most `l7.firstBytesMs` for
/// the first of them, `l7.headerTimeoutSecs` in all.
async fn sniff<D: Downstream>(
    down: &mut D,
    early: Bytes,
    l7: &L7Spec,
) -> stdio::Result<(Sniffed, Bytes)> {
    let mut buf = BytesMut::from(&early[..]);
    let mut sniffer = Sniffer::new();
    let first = Duration::from_millis(l7.first_bytes_ms);
    let all = Duration::from_secs(l7.header_timeout_secs);
    let start = Instant::now();
    loop {
        if let Sniff::Done(s) = sniffer.sniff(&buf) {
            return Ok((s, buf.freeze()));
        }
        let wait = if buf.is_empty() { first } else { all };
        let left = wait.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, down.read()).await {
            Ok(Ok(Some(b))) => buf.extend_from_slice(&b),
            // Half-closed or silent: decide on what there is (nothing: a server-first
            // protocol, opaque).
            Ok(Ok(None)) | Err(_) => {
                let s = sniffer.finish(&buf);
                return Ok((s, buf.freeze()));
            }
            Ok(Err(e)) => return Err(e),
        }
    }
}
